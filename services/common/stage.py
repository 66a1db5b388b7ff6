"""The process every stage service runs: workers that move the stage's topic through the stage, and
a gRPC server for health (SERVING only while the stage's Triton model is ready), reflection, admin,
metrics and the stage's own diagnostic API (DESIGN §2)."""

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from pydantic import Field, model_validator

from services.common.admin import AdminServicer
from services.common.logging import configure_logging
from services.common.metrics import QUEUE_DEPTH, STAGE_LATENCY, STATES_LOST, start_metrics_server
from services.common.server import AddServicer, build_server, serve_forever
from services.common.settings import ServiceSettings, load_settings
from swansphere.serving.redis_streams import RedisStateStore, RedisTransport
from swansphere.serving.stages import build_stages
from swansphere.serving.triton_backend import TritonBackend, TritonTLS
from swansphere.serving.triton_export import read_repository
from swansphere.serving.worker import StageWorker
from swansphere.v1 import stages_pb2_grpc

log = logging.getLogger(__name__)

HEALTH_PERIOD_S = 1.0
"""How often readiness (Triton model ready) and queue depth are refreshed."""


class StageSettings(ServiceSettings):
    """A stage service's environment: where the model repository is, and how many workers."""

    model_repository: str = "deploy/triton/models"
    """The Triton repository the export wrote (local or s3://); its swansphere.json gives the config."""
    workers: int = Field(1, ge=1, le=64)
    """Worker threads consuming the stage's topic; LocDiT and the decoder batch what each takes."""
    batch: int = Field(16, ge=1, le=1024)
    """Messages a worker takes per round."""
    triton_tls: bool = False
    """Reach Triton over mutual TLS, presenting tls_cert/tls_key and trusting tls_ca (Triton started
    with --grpc-use-ssl-mutual and a certificate from the same CA)."""

    @model_validator(mode="after")
    def _triton_tls_needs_files(self) -> "StageSettings":
        if self.triton_tls and self.tls_ca is None:
            raise ValueError("SWANSPHERE_TRITON_TLS needs SWANSPHERE_TLS_CA, SWANSPHERE_TLS_CERT and TLS_KEY")
        return self

    def triton_tls_files(self) -> TritonTLS | None:
        """The stage -> Triton hop's mutual TLS files, or None for plaintext."""
        if not self.triton_tls or self.tls_ca is None or self.tls_cert is None or self.tls_key is None:
            return None
        return TritonTLS(self.tls_ca, self.tls_cert, self.tls_key)

    min_idle_ms: int = Field(5000, ge=100)
    """Redis: a message unacked this long by a dead worker is claimed by a live one."""
    lock_lease_ms: int = Field(5000, ge=100)
    """Redis: a stream's lock held by a dead worker frees itself after this long; longer than any
    one stage step (an LM step or a video window, well under a second), shorter than the gateway's
    stall timeout, so a worker killed inside the lock delays its streams, never ends them."""


def run_stage(
    name: str, service: str, add: AddServicer, make_servicer: Callable[[TritonBackend], Any]
) -> None:
    """Serve stage `name` until SIGTERM: workers on its topic plus the gRPC service `service`."""
    settings = load_settings(StageSettings)
    configure_logging(name, settings.log_level)
    repository = read_repository(settings.model_repository)
    backend = TritonBackend(settings.triton_url, repository.config, tls=settings.triton_tls_files())
    transport = RedisTransport(  # one group per topic: acked entries go
        settings.redis_url, min_idle_ms=settings.min_idle_ms, delete_acked=True
    )
    store = RedisStateStore(settings.redis_url, lock_lease_ms=settings.lock_lease_ms)
    stage = build_stages(backend, store)[name]
    stage.on_states_lost = STATES_LOST.labels(name).inc
    ready = threading.Event()
    admin = AdminServicer(
        name, repository.model, ready.is_set, lambda: transport.depth(name, name), lambda: 0
    )
    built = build_server(
        settings,
        [(add, make_servicer(backend)), (stages_pb2_grpc.add_AdminServicer_to_server, admin)],
        [service, "swansphere.v1.Admin"],
    )
    if settings.metrics_port is not None:
        start_metrics_server(settings.metrics_port, settings.host)
    built.server.start()
    stop = threading.Event()
    consumer = f"{name}-{socket.gethostname()}-{os.getpid()}"
    for i in range(settings.workers):
        worker = StageWorker(
            stage,
            transport,
            f"{consumer}-{i}",
            settings.batch,
            on_batch=lambda n, seconds: STAGE_LATENCY.labels(name).observe(seconds),
        )
        threading.Thread(target=worker.run, args=(stop,), daemon=True, name=f"worker-{i}").start()
    threading.Thread(
        target=_watch, args=(name, backend, transport, built.health, ready, stop), daemon=True
    ).start()
    log.info("serving", extra={"stage": name, "port": built.port, "triton": settings.triton_url})
    try:
        serve_forever(built.server, built.health, settings.shutdown_grace_s)
    finally:
        stop.set()


def _watch(
    name: str,
    backend: TritonBackend,
    transport: RedisTransport,
    health: Any,
    ready: threading.Event,
    stop: threading.Event,
) -> None:
    """Health follows Triton: NOT_SERVING while the stage's model is not ready (DESIGN §2)."""
    while not stop.is_set():
        is_ready = backend.ready()
        if is_ready != ready.is_set():
            log.info("model ready" if is_ready else "model not ready", extra={"stage": name})
        ready.set() if is_ready else ready.clear()
        health.set_serving(is_ready)
        try:
            QUEUE_DEPTH.labels(name).set(transport.depth(name, name))
        except Exception:
            log.warning("queue depth unavailable", extra={"stage": name})
        stop.wait(HEALTH_PERIOD_S)
