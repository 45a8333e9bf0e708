"""Optional bearer-token authentication for every RPC but health checks.

Health stays open because kubelet probes and load balancers carry no token.
Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

import grpc

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def load_tokens(path: Path) -> list[bytes]:
    tokens = [line.strip() for line in path.read_text().splitlines()]
    tokens = [t.encode() for t in tokens if t and not t.startswith("#")]
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return tokens


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: Iterable[bytes]) -> None:
        self._tokens = list(tokens)

    def _authorized(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                value = value.encode() if isinstance(value, str) else value
                if value.startswith(b"Bearer "):
                    presented = value[len(b"Bearer "):].strip()
                    return any(hmac.compare_digest(presented, t) for t in self._tokens)
        return False

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(EXEMPT_PREFIXES):
            return handler
        if self._authorized(handler_call_details.invocation_metadata):
            return handler
        return _deny(handler)


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    message = "missing or invalid bearer token"

    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    kwargs = dict(request_deserializer=handler.request_deserializer,
                  response_serializer=handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, **kwargs)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream, **kwargs)
