"""Access control: bearer-token authentication and TLS / mutual-TLS server credentials.

Tokens are kept only as SHA-256 digests, compared in constant time against every accepted
digest, and never logged or echoed in a status message. A call without a valid token gets
UNAUTHENTICATED before its payload is parsed; health checks (and, when configured, server
reflection) stay open so probes need no secret.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

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
    """Lets a call through only with `authorization: Bearer <accepted token>` metadata."""

    def __init__(self, digests: Iterable[bytes], open_services: Iterable[str] = ()) -> None:
        self._digests = tuple(digests)
        self._open = frozenset(open_services)

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
        if service in self._open:
            return continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)  # type: ignore[arg-type]
        if token is not None and self.accepts(token):
            return continuation(handler_call_details)
        reason = "invalid bearer token" if token else "missing bearer token"
        handler = continuation(handler_call_details)
        return _rejecting(
            handler is not None and handler.request_streaming,
            handler is not None and handler.response_streaming,
            reason,
        )


@functools.cache  # a handful of (kind, reason) pairs; built once, not per refused call
def _rejecting(
    request_streaming: bool, response_streaming: bool, reason: str
) -> grpc.RpcMethodHandler:
    """A handler of the given kind that aborts with UNAUTHENTICATED without parsing the payload."""
    message = f"{reason}: send metadata '{AUTH_HEADER}: Bearer <token>'"

    def reject(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def identity(data: bytes) -> bytes:
        return data

    if request_streaming:
        if response_streaming:
            return grpc.stream_stream_rpc_method_handler(reject, request_deserializer=identity)
        return grpc.stream_unary_rpc_method_handler(reject, request_deserializer=identity)
    if response_streaming:
        return grpc.unary_stream_rpc_method_handler(reject, request_deserializer=identity)
    return grpc.unary_unary_rpc_method_handler(reject, request_deserializer=identity)


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
