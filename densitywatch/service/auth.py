"""Access control: bearer-token authentication and TLS / mutual-TLS server credentials.

Tokens are kept only as SHA-256 digests, compared in constant time against every accepted
digest, and never logged or echoed in a status message. A call without a valid token gets
UNAUTHENTICATED from its headers, before its message has arrived; health checks (and, when
configured, server reflection) stay open so probes need no secret, though per-stream health
answers only callers with a token unless configured open.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from densitywatch.errors import AccessConfigError
from densitywatch.service.settings import ServiceSettings

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
AUTH_HEADER = "authorization"
_SHA256_HEX = 64


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def read_token_hashes(path: Path) -> list[bytes]:
    """SHA-256 hex digests, one per line; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AccessConfigError(f"cannot read the token hashes file {path}: {e}") from None
    digests = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip().lower()
        if not text:
            continue
        if len(text) != _SHA256_HEX or any(c not in "0123456789abcdef" for c in text):
            # The line is not echoed: it may be a raw token pasted by mistake.
            raise AccessConfigError(
                f"{path} line {number}: expected a SHA-256 hex digest (64 hex characters)"
            )
        digests.append(bytes.fromhex(text))
    return digests


def accepted_digests(settings: ServiceSettings) -> list[bytes]:
    """Digests of every accepted token; empty when authentication is off."""
    digests = [token_digest(t.get_secret_value()) for t in settings.auth_tokens]
    if settings.auth_token_hashes_file is not None:
        digests += read_token_hashes(settings.auth_token_hashes_file)
    return digests


def open_services(settings: ServiceSettings) -> set[str]:
    services = set()
    if settings.auth_health_open:
        services.add(HEALTH_SERVICE)
    if settings.auth_reflection_open:
        services.update(REFLECTION_SERVICES)
    return services


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() != AUTH_HEADER or not isinstance(value, str):
            continue
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Lets a call through only with `authorization: Bearer <accepted token>` metadata.

    It decides from the headers alone, before the request message arrives: a refused call
    holds a handler thread only for as long as its refusal takes. Health names, beyond
    `public_health`, answer a caller without a token as if they did not exist: per-stream
    health would otherwise tell anyone which streams are served."""

    def __init__(
        self,
        digests: Iterable[bytes],
        open_services: Iterable[str] = (),
        public_health: Iterable[str] | None = None,
    ) -> None:
        self._digests = tuple(digests)
        self._open = frozenset(open_services)
        self._public_health = None if public_health is None else frozenset(public_health)
        self._masked: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def accepts(self, token: str) -> bool:
        digest = token_digest(token)
        ok = False
        for known in self._digests:  # no early exit: time does not depend on which matched
            ok |= hmac.compare_digest(digest, known)
        return ok

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        service = handler_call_details.method.lstrip("/").split("/", 1)[0]
        token = bearer_token(handler_call_details.invocation_metadata)  # type: ignore[arg-type]
        valid = token is not None and self.accepts(token)
        handler = continuation(handler_call_details)
        if valid or service in self._open:
            if valid or service != HEALTH_SERVICE or self._public_health is None:
                return handler
            return None if handler is None else self._masked_health(handler)
        return _rejecting(
            "invalid bearer token" if token else "missing bearer token",
            handler is not None and handler.response_streaming,
        )

    def _masked_health(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` answering only `public_health` names (cached: one per health method)."""
        cached = self._masked.get(id(handler))
        if cached is None:
            assert self._public_health is not None
            cached = (handler, _masked_health(handler, self._public_health))
            self._masked[id(handler)] = cached
        return cached[1]


# Asked of a masked health name instead: no service is ever registered under it, so Check
# answers NOT_FOUND and Watch SERVICE_UNKNOWN, exactly as for a name that does not exist.
_NO_SUCH_HEALTH = "\x00unregistered"


def _masked_health(
    handler: grpc.RpcMethodHandler, visible: frozenset[str]
) -> grpc.RpcMethodHandler:
    def mask(request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckRequest:
        if request.service in visible:
            return request
        return health_pb2.HealthCheckRequest(service=_NO_SUCH_HEALTH)

    if handler.unary_unary is not None:
        check = handler.unary_unary

        def masked_check(request: Any, context: grpc.ServicerContext) -> Any:
            return check(mask(request), context)

        return grpc.unary_unary_rpc_method_handler(
            masked_check,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    watch = handler.unary_stream

    def masked_watch(request: Any, context: grpc.ServicerContext, *callback: Any) -> Any:
        return watch(mask(request), context, *callback)

    # Keeps grpc's non-blocking form of health's Watch (no thread held while it is open).
    masked_watch.experimental_non_blocking = getattr(  # type: ignore[attr-defined]
        watch, "experimental_non_blocking", False
    )
    return grpc.unary_stream_rpc_method_handler(
        masked_watch,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


@functools.cache  # a handful of (kind, reason) pairs; built once, not per refused call
def _rejecting(reason: str, response_streaming: bool) -> grpc.RpcMethodHandler:
    """A handler that aborts with UNAUTHENTICATED at once. It is request-streaming whatever
    the method (the wire is the same): grpc waits for a unary request's message before
    calling its handler, and a caller that never sends one would hold the thread."""
    message = f"{reason}: send metadata '{AUTH_HEADER}: Bearer <token>'"

    def reject(requests: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def identity(data: bytes) -> bytes:
        return data

    if response_streaming:
        return grpc.stream_stream_rpc_method_handler(reject, request_deserializer=identity)
    return grpc.stream_unary_rpc_method_handler(reject, request_deserializer=identity)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise AccessConfigError(f"cannot read the {what} {path}: {e}") from None


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (mutual TLS with a client CA); None: off."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (
        _read(settings.tls_key_file, "TLS key"),
        _read(settings.tls_cert_file, "TLS certificate"),
    )
    client_ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=None if client_ca is None else _read(client_ca, "client CA bundle"),
        require_client_auth=client_ca is not None,
    )
