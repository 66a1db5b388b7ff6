"""What every SwanSphere service shares: settings, JSON logging, metrics and the gRPC server scaffold."""
