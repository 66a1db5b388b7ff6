"""The gRPC server every SwanSphere service runs: health, reflection, request metrics, graceful stop.

Typical `main`:

    built = build_server(settings, [(add_AdminServicer_to_server, admin)], ["swansphere.v1.Admin"])
    built.server.start()
    ...load the model...
    built.health.set_serving(True)
    serve_forever(built.server, built.health, settings.shutdown_grace_s)
"""

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.metrics import REQUESTS
from services.common.settings import ServiceSettings
from swansphere.client import MAX_MESSAGE_BYTES
from swansphere.errors import InputError

log = logging.getLogger("swansphere.server")

EXTRA_WORKERS = 8
"""Threads beyond max_streams, so health probes, admin and unary calls never wait behind streams."""
CLIENT_CODES = (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
"""Codes the client caused: logged at INFO, not as errors."""
SIGNAL_POLL_S = 0.5
"""How often serve_forever's main thread wakes to run a pending signal handler."""

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
AddServicer = Callable[[Any, grpc.Server], None]
"""A generated `add_XServicer_to_server` function."""


class Health:
    """The standard grpc.health.v1 service: one status for the server ("") and each listed service."""

    def __init__(self, servicer: health.HealthServicer, service_names: Sequence[str]):
        self.servicer = servicer
        self.service_names = list(service_names)

    def set_serving(self, ready: bool) -> None:
        """SERVING when the model is loaded and calls can be served, else NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            self.servicer.set(name, status)

    def enter_shutdown(self) -> None:
        """NOT_SERVING for good: later `set_serving(True)` calls are ignored."""
        self.servicer.enter_graceful_shutdown()


@dataclass(frozen=True)
class BuiltServer:
    server: grpc.Server
    """Bound, not started."""
    health: Health
    """NOT_SERVING until the service calls `health.set_serving(True)`."""
    port: int
    """The bound port (the chosen one when settings.port is 0)."""


def server_options() -> list[tuple[str, int]]:
    """Explicit message limits (clip responses are large), and a busy port fails instead of being shared."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]


def build_server(
    settings: ServiceSettings,
    servicers: Sequence[tuple[AddServicer, Any]],
    service_names: Sequence[str],
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> BuiltServer:
    """A sync gRPC server on settings.host:port (TLS when tls_cert/tls_key are set, mutual with tls_ca)
    serving `servicers`, health and reflection; calls to `service_names` are counted and errors logged.
    `interceptors` (e.g. token auth) run after the counting one, so refused calls are counted too."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.max_streams + EXTRA_WORKERS, thread_name_prefix="grpc"),
        interceptors=[CountingInterceptor(service_names), *interceptors],
        options=server_options(),
    )
    for add, servicer in servicers:
        add(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    status = Health(health_servicer, service_names)
    status.set_serving(False)
    address = f"{settings.host}:{settings.port}"
    try:
        if settings.tls_cert is not None and settings.tls_key is not None:
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
                root_certificates=settings.tls_ca.read_bytes() if settings.tls_ca else None,
                require_client_auth=settings.tls_ca is not None,
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as err:
        raise InputError(f"cannot listen on {address}: {err}") from None
    return BuiltServer(server, status, port)


def shutdown(server: grpc.Server, health: Health, grace_s: float) -> None:
    """NOT_SERVING first (load balancers stop sending), then refuse new calls and give in-flight ones
    `grace_s` seconds to finish before they are cancelled; returns once the server has stopped."""
    health.enter_shutdown()
    server.stop(grace_s).wait()


def serve_forever(server: grpc.Server, health: Health, grace_s: float) -> None:
    """Block until SIGTERM or SIGINT, then `shutdown`. Call from the main thread, after `server.start()`."""
    stop, received = threading.Event(), []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Python runs a signal's handler in the main thread between bytecodes; a wait that times out
        # keeps that thread coming back even if the kernel delivered the signal to another thread.
        while not stop.wait(SIGNAL_POLL_S):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("shutting down", extra={"signal": received[0], "grace_s": grace_s})
    shutdown(server, health, grace_s)
    log.info("stopped")


class CountingInterceptor(grpc.ServerInterceptor):
    """Counts finished calls of the listed services by method and code, logs the failed ones, and turns
    an `InputError` a servicer raises into INVALID_ARGUMENT with its message.

    Health and reflection pass through untouched: probes are not traffic, and health's non-blocking
    Watch needs its own handler."""

    def __init__(self, service_names: Sequence[str]):
        self.prefixes = tuple(f"/{name}/" for name in service_names)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self.prefixes):
            return handler
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_counted(handler.unary_unary, method), **codecs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_counted(handler.stream_unary, method), **codecs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _counted_stream(handler.unary_stream, method), **codecs
            )
        return grpc.stream_stream_rpc_method_handler(_counted_stream(handler.stream_stream, method), **codecs)


def _counted(behavior: Callable, method: str) -> Callable:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            response = behavior(request, context)
        except InputError as err:
            _invalid(method, context, err)
        except Exception as err:
            _finish(method, context, err)
            raise
        _finish(method, context, None)
        return response

    return call


def _counted_stream(behavior: Callable, method: str) -> Callable:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except GeneratorExit:
            _record(method, grpc.StatusCode.CANCELLED, "the client went away")
            raise
        except InputError as err:
            _invalid(method, context, err)
        except Exception as err:
            _finish(method, context, err)
            raise
        _finish(method, context, None)

    return call


def _invalid(method: str, context: grpc.ServicerContext, error: InputError) -> None:
    _record(method, grpc.StatusCode.INVALID_ARGUMENT, str(error))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))


def _finish(method: str, context: grpc.ServicerContext, error: Exception | None) -> None:
    """Count the call under the code the servicer set (abort or set_code); a crash is UNKNOWN."""
    code, details = context.code(), context.details()
    details = details.decode(errors="replace") if isinstance(details, bytes) else details or ""
    if code is None and error is not None:
        REQUESTS.labels(method=method, code=grpc.StatusCode.UNKNOWN.name).inc()
        log.error(
            "call crashed", exc_info=error, extra={"method": method, "code": grpc.StatusCode.UNKNOWN.name}
        )
        return
    if code is None and not context.is_active():  # returned after the client went away
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        details = "the deadline passed" if expired else "the client went away"
    _record(method, code or grpc.StatusCode.OK, details)


def _record(method: str, code: grpc.StatusCode, details: str) -> None:
    REQUESTS.labels(method=method, code=code.name).inc()
    if code is not grpc.StatusCode.OK:
        level = logging.INFO if code in CLIENT_CODES else logging.WARNING
        log.log(level, "call failed", extra={"method": method, "code": code.name, "details": details})
