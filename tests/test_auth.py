"""Token auth on the public API: a call without the bearer token is UNAUTHENTICATED before the gateway
reads it; with it, it reaches the gateway; health stays open for probes."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import TokenAuthInterceptor, read_tokens
from services.common.server import build_server
from services.common.settings import load_settings
from services.gateway.servicer import GatewayServicer
from swansphere.client import SwanSphereClient
from swansphere.errors import InputError
from swansphere.serving.state import MemoryStateStore
from swansphere.serving.transport import MemoryTransport
from swansphere.v1 import swansphere_pb2_grpc

SERVICE = "swansphere.v1.SwanSphere"


@pytest.fixture
def gateway(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated monthly\nalpha\n\nbeta\n")
    servicer = GatewayServicer(
        MemoryTransport(), MemoryStateStore(), 8192, "m", 2, 5.0, ready=lambda: "no pipeline in this test"
    )
    built = build_server(
        load_settings(port=0),
        [(swansphere_pb2_grpc.add_SwanSphereServicer_to_server, servicer)],
        [SERVICE],
        [TokenAuthInterceptor(read_tokens(tokens), [SERVICE])],
    )
    built.server.start()
    built.health.set_serving(True)
    yield f"127.0.0.1:{built.port}"
    built.server.stop(0).wait()


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, "UNAUTHENTICATED"),
        ("gamma", "UNAUTHENTICATED"),
        ("alpha", "UNAVAILABLE"),
        ("beta", "UNAVAILABLE"),
    ],
)
def test_only_listed_tokens_reach_the_gateway(gateway, token, code):
    with (
        SwanSphereClient(gateway, timeout_s=10, retries=0, token=token) as client,
        pytest.raises(grpc.RpcError) as caught,
    ):
        client.generate_clip(duration_s=1.0)
    assert caught.value.code().name == code
    if code == "UNAVAILABLE":
        assert "no pipeline in this test" in caught.value.details()


def test_health_needs_no_token(gateway):
    with grpc.insecure_channel(gateway) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_token_file_must_hold_a_token(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="holds no token"):
        read_tokens(empty)
    with pytest.raises(InputError, match="cannot read"):
        read_tokens(tmp_path / "missing")
    with pytest.raises(InputError, match="whitespace"):
        SwanSphereClient("127.0.0.1:1", token="a b")
