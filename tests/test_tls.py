"""Mutual TLS on the gateway's own calls to the stages: a TLS-only stage is SERVING to a gateway with
the release's certificates, and unreachable to one without."""

from helpers_tls import write_certificate

from services.common.server import build_server
from services.common.settings import channel_credentials, load_settings
from services.gateway.server import PipelineHealth
from swansphere.serving.transport import MemoryTransport


def test_the_gateway_checks_tls_stages_with_its_certificate(tmp_path):
    ca = write_certificate(tmp_path, "ca")
    write_certificate(tmp_path, "stage", ca)
    write_certificate(tmp_path, "gateway", ca)
    stage = build_server(
        load_settings(
            port=0,
            tls_cert=tmp_path / "stage.pem",
            tls_key=tmp_path / "stage.key",
            tls_ca=tmp_path / "ca.pem",
        ),
        [],
        [],
    )
    stage.server.start()
    stage.health.set_serving(True)
    try:
        target = [f"127.0.0.1:{stage.port}"]
        gateway = load_settings(
            tls_cert=tmp_path / "gateway.pem", tls_key=tmp_path / "gateway.key", tls_ca=tmp_path / "ca.pem"
        )
        with_tls = PipelineHealth(MemoryTransport(), target, channel_credentials(gateway))
        with_tls.check()
        assert with_tls.why_not() is None
        plaintext = PipelineHealth(MemoryTransport(), target, channel_credentials(load_settings()))
        plaintext.check()
        assert "unreachable" in plaintext.why_not()
    finally:
        stage.server.stop(0).wait()
