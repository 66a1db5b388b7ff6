"""MLflow tracking for the jobs: params, per-step metrics, artifacts, a registered model per generator.

Only rank 0 talks to MLflow; the other ranks get a tracker whose calls do nothing, so job code never
asks which rank it is on. Without a tracking URI (config or $MLFLOW_TRACKING_URI) runs go to a
sqlite store in `mlruns/` under the working directory.
"""

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow

from swansphere.train.config import MLflowConfig

log = logging.getLogger(__name__)


def default_tracking_uri() -> str:
    folder = Path("mlruns").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


class Tracker:
    """One MLflow run; `active=False` makes every call a no-op (non-zero ranks)."""

    def __init__(self, config: MLflowConfig, active: bool):
        self.config = config
        self.active = active
        self.run_id: str | None = None

    def start(self, params: dict[str, Any], run_id: str | None = None) -> None:
        """Start the run, or continue `run_id` when a job resumes."""
        if not self.active:
            return
        uri = self.config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        mlflow.set_tracking_uri(uri)
        if run_id:
            run = mlflow.start_run(run_id=run_id)
        else:
            mlflow.set_experiment(self.config.experiment)
            run = mlflow.start_run(run_name=self.config.run_name)
            mlflow.log_params(_flatten(params))
        self.run_id = run.info.run_id
        log.info("MLflow run %s at %s", self.run_id, uri)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.active and self.run_id:
            mlflow.log_metrics({k.replace("/", "."): float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.active and self.run_id:
            mlflow.log_artifact(str(path), artifact_path=folder)

    def log_bytes(self, data: bytes, name: str, folder: str | None = None) -> None:
        """Log in-memory content (a checkpoint read from S3, a WAV) as an artifact file."""
        if not (self.active and self.run_id):
            return
        with tempfile.TemporaryDirectory(prefix="swansphere-artifact-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.log_artifact(path, folder)

    def log_table(self, rows: list[dict[str, Any]], name: str) -> None:
        if self.active and self.run_id and rows:
            columns = {key: [row.get(key) for row in rows] for key in rows[0]}
            mlflow.log_table(columns, artifact_file=name)

    def register(self, artifact_folder: str) -> str | None:
        """Register the run's `artifact_folder` (our safetensors checkpoint, not an MLflow-flavoured
        model) as a new version of `config.registered_model`."""
        if not (self.active and self.run_id and self.config.registered_model):
            return None
        client = mlflow.MlflowClient()
        name = self.config.registered_model
        if not client.search_registered_models(filter_string=f"name='{name}'"):
            client.create_registered_model(name, description="SwanSphere generator checkpoints (safetensors)")
        source = f"{mlflow.get_run(self.run_id).info.artifact_uri}/{artifact_folder}"
        version = client.create_model_version(name, source=source, run_id=self.run_id)
        log.info("registered %s version %s", name, version.version)
        return str(version.version)

    def finish(self) -> None:
        if self.active and self.run_id:
            mlflow.end_run()


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat
