"""services.common over real loopback servers: health, reflection, request metrics, JSON logs, settings
and graceful shutdown."""

import json
import logging
import os
import signal
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from services.common.logging import configure_logging
from services.common.metrics import start_metrics_server
from services.common.server import build_server, serve_forever
from services.common.settings import ServiceSettings, load_settings
from services.common.stage import StageSettings
from services.common.tensors import from_tensor
from swansphere.errors import InputError
from swansphere.v1 import stages_pb2, stages_pb2_grpc

ENCODER = "swansphere.v1.VideoEncoder"
ENCODE = f"/{ENCODER}/Encode"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


SLOW_CALL_STARTED = threading.Event()


class Encoder(stages_pb2_grpc.VideoEncoderServicer):
    """Behaves by stream_id: "slow" takes 0.6 s (SLOW_CALL_STARTED says it began), "crash" raises,
    no frames is bad input."""

    def Encode(self, request, context):
        if request.stream_id == "crash":
            raise RuntimeError("boom")
        if not request.HasField("frames"):
            raise InputError("EncodeRequest needs frames")
        if request.stream_id == "slow":
            SLOW_CALL_STARTED.set()
            time.sleep(0.6)
        return stages_pb2.EncodeResponse(
            stream_id=request.stream_id, tokens=stages_pb2.Tensor(dtype="float32")
        )


def frames() -> stages_pb2.Tensor:
    return stages_pb2.Tensor(dtype="uint8", shape=[1, 2, 4, 3], data=bytes(24))


@pytest.fixture
def built():
    settings = load_settings(port=0, max_streams=2)
    server = build_server(
        settings, [(stages_pb2_grpc.add_VideoEncoderServicer_to_server, Encoder())], [ENCODER]
    )
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop(None).wait()


@pytest.fixture
def channel(built):
    with grpc.insecure_channel(f"127.0.0.1:{built.port}") as channel:
        yield channel


def requests_count(method: str, code: str) -> float:
    return (
        REGISTRY.get_sample_value("swansphere_grpc_requests_total", {"method": method, "code": code}) or 0.0
    )


def test_health_is_not_serving_until_ready_and_follows_set_serving(built, channel):
    health = health_pb2_grpc.HealthStub(channel)

    def status(service: str) -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    assert status("") == NOT_SERVING and status(ENCODER) == NOT_SERVING
    built.health.set_serving(True)
    assert status("") == SERVING and status(ENCODER) == SERVING
    built.health.set_serving(False)
    assert status("") == NOT_SERVING and status(ENCODER) == NOT_SERVING


def test_reflection_lists_the_services_and_serves_their_descriptors(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {ENCODER, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    assert database.FindFileContainingSymbol(ENCODER).name == "swansphere/v1/stages.proto"


def test_interceptor_counts_calls_by_code_and_maps_input_error_to_invalid_argument(channel, caplog):
    encode = stages_pb2_grpc.VideoEncoderStub(channel).Encode
    before = {code: requests_count(ENCODE, code) for code in ("OK", "INVALID_ARGUMENT", "UNKNOWN")}
    assert encode(stages_pb2.EncodeRequest(stream_id="a", frames=frames()), timeout=5).stream_id == "a"
    with pytest.raises(grpc.RpcError) as bad:
        encode(stages_pb2.EncodeRequest(stream_id="b"), timeout=5)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details() == "EncodeRequest needs frames"
    with caplog.at_level(logging.ERROR, logger="swansphere.server"), pytest.raises(grpc.RpcError) as crash:
        encode(stages_pb2.EncodeRequest(stream_id="crash", frames=frames()), timeout=5)
    assert crash.value.code() is grpc.StatusCode.UNKNOWN
    for code in ("OK", "INVALID_ARGUMENT", "UNKNOWN"):
        assert requests_count(ENCODE, code) == before[code] + 1
    crashed = [r for r in caplog.records if r.getMessage() == "call crashed"]
    assert crashed and crashed[0].method == ENCODE and "boom" in str(crashed[0].exc_info[1])


def test_a_call_that_returns_after_its_deadline_counts_as_deadline_exceeded(channel):
    encode = stages_pb2_grpc.VideoEncoderStub(channel).Encode
    before = {code: requests_count(ENCODE, code) for code in ("OK", "DEADLINE_EXCEEDED")}
    SLOW_CALL_STARTED.clear()
    with pytest.raises(grpc.RpcError) as late:
        encode(stages_pb2.EncodeRequest(stream_id="slow", frames=frames()), timeout=0.3)
    assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert SLOW_CALL_STARTED.wait(5)
    deadline = time.monotonic() + 5
    while (
        requests_count(ENCODE, "DEADLINE_EXCEEDED") == before["DEADLINE_EXCEEDED"]
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert requests_count(ENCODE, "DEADLINE_EXCEEDED") == before["DEADLINE_EXCEEDED"] + 1
    assert requests_count(ENCODE, "OK") == before["OK"]


def test_metrics_endpoint_serves_the_shared_metrics(channel, closed_port):
    stages_pb2_grpc.VideoEncoderStub(channel).Encode(stages_pb2.EncodeRequest(frames=frames()), timeout=5)
    server = start_metrics_server(closed_port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{closed_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    for name in (
        "swansphere_stage_latency_seconds",
        "swansphere_queue_depth",
        "swansphere_active_streams",
        "swansphere_states_lost_total",
    ):
        assert f"# TYPE {name} " in text
    assert f'swansphere_grpc_requests_total{{code="OK",method="{ENCODE}"}}' in text


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_log_records_are_one_json_object_per_line(capsys, restore_root_logger):
    configure_logging("video_encoder", "debug")
    logging.getLogger("swansphere.test").info("patch %d done", 3, extra={"stream_id": "s1", "patch_index": 3})
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger("swansphere.test").exception("failed")
    first, second = capsys.readouterr().err.strip().splitlines()
    entry = json.loads(first)
    assert {k: entry[k] for k in ("level", "service", "message", "stream_id", "patch_index")} == {
        "level": "INFO",
        "service": "video_encoder",
        "message": "patch 3 done",
        "stream_id": "s1",
        "patch_index": 3,
    }
    assert entry["ts"].endswith("+00:00")
    error = json.loads(second)
    assert error["level"] == "ERROR" and "ValueError: bad frame" in error["exception"]


def test_settings_come_from_swansphere_environment_variables(monkeypatch, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    env = {
        "SWANSPHERE_PORT": "6000",
        "SWANSPHERE_MAX_STREAMS": "8",
        "SWANSPHERE_LOG_LEVEL": "debug",
        "SWANSPHERE_KAFKA_BOOTSTRAP": "127.0.0.1:9092,broker:9093",
        "SWANSPHERE_TLS_CERT": str(cert),
        "SWANSPHERE_TLS_KEY": str(key),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.port, settings.max_streams, settings.log_level) == (6000, 8, "DEBUG")
    assert settings.kafka_bootstrap == "127.0.0.1:9092,broker:9093" and settings.tls_key == key
    assert settings.metrics_port is None and settings.redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        (
            "SWANSPHERE_PORT",
            "70000",
            "SWANSPHERE_PORT: Input should be less than or equal to 65535 (got '70000')",
        ),
        ("SWANSPHERE_MAX_STREAMS", "many", "SWANSPHERE_MAX_STREAMS: Input should be a valid integer"),
        ("SWANSPHERE_TRITON_URL", "triton", "SWANSPHERE_TRITON_URL: must be HOST:PORT, got 'triton'"),
        ("SWANSPHERE_REDIS_URL", "127.0.0.1:6379", "SWANSPHERE_REDIS_URL: must start with redis://"),
        ("SWANSPHERE_LOG_LEVEL", "loud", "SWANSPHERE_LOG_LEVEL: Input should be 'DEBUG', 'INFO'"),
        ("SWANSPHERE_TLS_CERT", "/no/cert.pem", "SWANSPHERE_TLS_CERT and SWANSPHERE_TLS_KEY go together"),
    ],
)
def test_bad_settings_are_one_clear_input_error(monkeypatch, name, value, reason):
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=r"^bad service settings: ") as err:
        load_settings()
    assert reason in str(err.value)


def test_a_busy_port_is_an_input_error(built):
    settings = ServiceSettings(port=built.port)
    with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{built.port}"):
        build_server(settings, [], [])


def test_sigterm_turns_health_not_serving_and_lets_in_flight_calls_finish(built, channel):
    """serve_forever in the main thread (signals are delivered there); a helper thread plays the client
    and Kubernetes: watch health, start a slow call, send SIGTERM."""
    built.health.set_serving(True)
    SLOW_CALL_STARTED.clear()
    original = signal.getsignal(signal.SIGTERM)
    watched, outcome, sent = [], {}, []

    def terminate() -> None:
        """SIGTERM once serve_forever handles it, and only once: a second one after it restored the
        original handler would end pytest."""
        if sent:
            return
        while signal.getsignal(signal.SIGTERM) is original:
            time.sleep(0.01)
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)

    def client() -> None:
        try:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=ENCODER), timeout=30
            )
            watched.append(next(watch).status)
            with ThreadPoolExecutor(1) as pool:
                slow = pool.submit(
                    stages_pb2_grpc.VideoEncoderStub(channel).Encode,
                    stages_pb2.EncodeRequest(stream_id="slow", frames=frames()),
                    timeout=10,
                )
                assert SLOW_CALL_STARTED.wait(10), "the slow call never reached the servicer"
                terminate()
                watched.append(next(watch).status)
                watch.cancel()
                outcome["slow"] = slow.result().stream_id
        except Exception as err:  # the assertions below report it once serve_forever has returned
            outcome["error"] = repr(err)
        finally:
            terminate()

    helper = threading.Thread(target=client)
    helper.start()
    started = time.monotonic()
    serve_forever(built.server, built.health, grace_s=5.0)
    helper.join(10)
    assert outcome == {"slow": "slow"}
    assert watched == [SERVING, NOT_SERVING]
    assert time.monotonic() - started < 5.0, "shutdown waited for the grace period instead of the call"
    assert signal.getsignal(signal.SIGTERM) is original
    with pytest.raises(grpc.RpcError) as after:
        stages_pb2_grpc.VideoEncoderStub(channel).Encode(stages_pb2.EncodeRequest(frames=frames()), timeout=2)
    assert after.value.code() is grpc.StatusCode.UNAVAILABLE


def test_triton_tls_needs_the_services_tls_files(monkeypatch):
    monkeypatch.setenv("SWANSPHERE_TRITON_TLS", "true")
    with pytest.raises(InputError, match="SWANSPHERE_TRITON_TLS needs SWANSPHERE_TLS_CA"):
        load_settings(StageSettings)
    monkeypatch.setenv("SWANSPHERE_TRITON_TLS", "false")
    assert load_settings(StageSettings).triton_tls_files() is None


@pytest.mark.parametrize(
    ("tensor", "reason"),
    [
        (stages_pb2.Tensor(dtype="float64", shape=[1, 2], data=bytes(16)), "dtype float64, expected float32"),
        (stages_pb2.Tensor(dtype="float32", shape=[2], data=bytes(8)), "expected 2 non-negative dimensions"),
        (stages_pb2.Tensor(dtype="float32", shape=[-1, 2], data=bytes(8)), "expected 2 non-negative"),
        (stages_pb2.Tensor(dtype="float32", shape=[1 << 14, 1 << 13]), "at most 67108864"),
        # 2^64 values: counted in 64-bit integers this would wrap to 0 and match the empty data.
        (stages_pb2.Tensor(dtype="float32", shape=[1 << 32, 1 << 32]), "18446744073709551616 values"),
        (stages_pb2.Tensor(dtype="float32", shape=[1, 2], data=bytes(7)), "7 bytes for shape"),
        (stages_pb2.Tensor(dtype="float32", shape=[1, 2], data=np.float32([0, np.nan]).tobytes()), "NaN"),
        (
            stages_pb2.Tensor(dtype="float32", shape=[1, 2], data=np.float32([np.inf, 0]).tobytes()),
            "infinite",
        ),
    ],
)
def test_a_malformed_tensor_is_an_input_error_naming_the_field(tensor, reason):
    with pytest.raises(InputError, match=reason):
        from_tensor(tensor, "h", "float32", 2)
    assert from_tensor(
        stages_pb2.Tensor(dtype="float32", shape=[1, 2], data=bytes(8)), "h", "float32", 2
    ).shape == (1, 2)
