"""`swansphere serve gateway`: the public SwanSphere API over the stage pipeline (Redis Streams),
with the Kafka event log when SWANSPHERE_KAFKA_BOOTSTRAP is set.

Readiness follows the pipeline: SERVING only while Redis answers and every stage service in
SWANSPHERE_STAGE_TARGETS reports SERVING (so Triton down -> stages NOT_SERVING -> the gateway too, and
Generate answers UNAVAILABLE until they recover).
"""

import logging
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field

from services.common.admin import AdminServicer
from services.common.auth import TokenAuthInterceptor, read_tokens
from services.common.logging import configure_logging
from services.common.metrics import start_metrics_server
from services.common.server import build_server, serve_forever
from services.common.settings import ServiceSettings, channel_credentials, load_settings
from services.gateway.events import EVENT_LINGER_MS, BackgroundEvents
from services.gateway.servicer import GatewayServicer
from swansphere.serving.kafka_log import EventLog, KafkaTransport
from swansphere.serving.redis_streams import RedisStateStore, RedisTransport
from swansphere.serving.stages import STAGES
from swansphere.serving.transport import Transport
from swansphere.serving.triton_export import read_repository
from swansphere.v1 import stages_pb2_grpc, swansphere_pb2_grpc

log = logging.getLogger(__name__)

CHECK_PERIOD_S = 1.0


class GatewaySettings(ServiceSettings):
    model_repository: str = "deploy/triton/models"
    """The Triton repository the export wrote (local or s3://): the gateway reads the model config."""
    stage_targets: str = ""
    """Comma-separated HOST:PORT of the four stage services, whose health the gateway follows."""
    stall_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    """A stream with no chunk for this long ends with UNAVAILABLE, retryable, or, if its client sent
    nothing either (no frames, no end), with DEADLINE_EXCEEDED."""
    auth_tokens_file: Path | None = None
    """Bearer tokens the public API accepts, one per line (a mounted Secret); unset = no auth."""
    max_queue_depth: int = Field(2000, ge=1)
    """New streams are refused (RESOURCE_EXHAUSTED) while any stage has more messages waiting."""


class PipelineHealth:
    """Polls Redis, the stage services and the stages' backlogs. `why_not()` is None when the pipeline
    is up (else UNAVAILABLE); `overloaded()` is None unless a stage's backlog is over the limit (then
    RESOURCE_EXHAUSTED: the pipeline works, it is only full)."""

    def __init__(
        self,
        transport: Transport,
        targets: list[str],
        credentials: grpc.ChannelCredentials | None = None,
        max_queue_depth: int = 2000,
    ):
        """With `credentials` (TLS on), the stages are reached over mutual TLS."""
        self.transport = transport
        self.max_queue_depth = max_queue_depth
        self.backlog: str | None = None
        self.channels = {
            target: grpc.insecure_channel(target)
            if credentials is None
            else grpc.secure_channel(target, credentials)
            for target in targets
        }
        self.problem: str | None = "not checked yet"

    def why_not(self) -> str | None:
        return self.problem

    def overloaded(self) -> str | None:
        return self.backlog

    def check(self) -> None:
        try:
            depths = {stage: self.transport.depth(stage, stage) for stage in STAGES}
        except Exception as err:
            self.problem = f"redis unreachable ({err})"
            return
        full = {stage: depth for stage, depth in depths.items() if depth > self.max_queue_depth}
        self.backlog = None if not full else f"stage backlog over {self.max_queue_depth} messages: {full}"
        for target, channel in self.channels.items():
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0
                )
            except grpc.RpcError as err:
                self.problem = f"stage {target} unreachable ({err.code().name})"
                return
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                self.problem = f"stage {target} is not serving"
                return
        self.problem = None


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_level)
    repository = read_repository(settings.model_repository)
    transport = RedisTransport(settings.redis_url, delete_acked=True)  # one group per topic
    store = RedisStateStore(settings.redis_url)
    events = None
    if settings.kafka_bootstrap:
        producer = KafkaTransport(settings.kafka_bootstrap, client_id="gateway", linger_ms=EVENT_LINGER_MS)
        events = BackgroundEvents(EventLog(producer))
    targets = [t.strip() for t in settings.stage_targets.split(",") if t.strip()]
    pipeline = PipelineHealth(transport, targets, channel_credentials(settings), settings.max_queue_depth)
    servicer = GatewayServicer(
        transport,
        store,
        repository.config.patch_samples,
        model=repository.model,
        max_streams=settings.max_streams,
        stall_timeout_s=settings.stall_timeout_s,
        ready=pipeline.why_not,
        overloaded=pipeline.overloaded,
        on_chunk=None if events is None else events.chunk,
        on_request=None if events is None else events.request,
    )
    admin = AdminServicer(
        "gateway",
        repository.model,
        lambda: pipeline.why_not() is None,
        lambda: 0,
        lambda: servicer.active_streams,
    )
    interceptors = []
    if settings.auth_tokens_file is not None:
        tokens = read_tokens(settings.auth_tokens_file)
        interceptors.append(TokenAuthInterceptor(tokens, ["swansphere.v1.SwanSphere", "swansphere.v1.Admin"]))
    built = build_server(
        settings,
        [
            (swansphere_pb2_grpc.add_SwanSphereServicer_to_server, servicer),
            (stages_pb2_grpc.add_AdminServicer_to_server, admin),
        ],
        ["swansphere.v1.SwanSphere", "swansphere.v1.Admin"],
        interceptors,
    )
    if settings.metrics_port is not None:
        start_metrics_server(settings.metrics_port, settings.host)
    built.server.start()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            pipeline.check()
            built.health.set_serving(pipeline.why_not() is None)
            stop.wait(CHECK_PERIOD_S)

    threading.Thread(target=watch, daemon=True, name="pipeline-health").start()
    log.info("serving", extra={"port": built.port, "stages": targets})
    try:
        serve_forever(built.server, built.health, settings.shutdown_grace_s)
    finally:
        stop.set()
        if events is not None:
            events.close()
