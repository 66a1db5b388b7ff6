"""Training jobs: torchrun entry points, MLflow tracking, Kubernetes submission."""
