"""Bearer-token authentication for the public API: `authorization: Bearer <token>` on every call of
the protected services, compared in constant time; health and reflection stay open for probes."""

import hmac
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from swansphere.errors import InputError


def read_tokens(path: Path) -> list[str]:
    """One token per line (a mounted Kubernetes Secret); blank lines and # comments ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InputError(f"{path}: cannot read the token file ({err.strerror})") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not tokens:
        raise InputError(f"{path}: the token file holds no token")
    return tokens


class TokenAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: Sequence[str], service_names: Sequence[str]):
        self.expected = [f"Bearer {token}".encode() for token in tokens]
        self.prefixes = tuple(f"/{name}/" for name in service_names)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self.prefixes):
            return handler
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        given = given.encode() if isinstance(given, str) else given
        if any(hmac.compare_digest(given, expected) for expected in self.expected):
            return handler
        return _refusal(handler, "missing or invalid bearer token" if given else "missing bearer token")


def _refusal(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED without reading the request."""

    def deny(_request: object, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, **codecs)
    return grpc.stream_stream_rpc_method_handler(deny, **codecs)
