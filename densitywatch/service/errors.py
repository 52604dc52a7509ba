"""The ONE place where the server turns errors into gRPC statuses.

Every error class in `densitywatch.errors` names its gRPC status; `status_of` maps any
exception (ours, or an unexpected one: INTERNAL, logged) to (code, message), and
`ErrorInterceptor` applies it to every RPC and records the request-duration metric. The
client maps status codes back to the same classes (`densitywatch.errors.for_status`), so
callers catch one hierarchy on both sides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from densitywatch.errors import DensityWatchError, InvalidArgumentError

log = logging.getLogger(__name__)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message for any exception raised while serving."""
    if isinstance(exc, DensityWatchError):
        return grpc.StatusCode[exc.status], exc.message
    log.exception("unexpected error while serving", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


DurationObserver = Callable[[str, str, float], None]


@dataclass(frozen=True)
class Undecodable:
    """A request payload its method's deserializer refused (bad protobuf, invalid UTF-8)."""

    error: str

    def invalid(self) -> InvalidArgumentError:
        return InvalidArgumentError(f"malformed request message: {self.error}", reason="decode")


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a deserializer so a bad payload reaches the handler as `Undecodable`: grpc would
    answer INTERNAL ("Exception deserializing request!"); it is the caller's INVALID_ARGUMENT."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:
            return Undecodable(f"{type(e).__name__}: {e}")

    return deserialize


def _checked(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Undecodable):
            raise request.invalid()
        yield request


_MAX_CACHED_HANDLERS = 1024  # bounds the cache if some interceptor built handlers per call


class ErrorInterceptor(grpc.ServerInterceptor):
    """Converts exceptions to statuses for every method and times every call."""

    def __init__(self, observe: DurationObserver) -> None:
        self._observe = observe
        # Wrapped once per handler, not per call: the handlers behind a method are fixed
        # (under token auth, also one of a few cached refusal handlers). The cache holds each
        # handler, so no other object can take its id while its entry exists.
        self._wrapped: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        key = (handler_call_details.method, id(handler))
        cached = self._wrapped.get(key)
        if cached is not None:
            return cached[1]
        wrapped = self._wrap(handler_call_details.method.rsplit("/", 1)[-1], handler)
        if len(self._wrapped) < _MAX_CACHED_HANDLERS:
            self._wrapped[key] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        deserializer = _lenient(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(method, handler.stream_stream, requests=True),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                if isinstance(request, Undecodable):
                    raise request.invalid()
                response = behaviour(request, context)
            except Exception as exc:
                self._fail(method, start, exc, context)
            self._observe(method, "OK", time.perf_counter() - start)
            return response

        return wrapped

    def _streaming(
        self, method: str, behaviour: Callable[..., Any], requests: bool = False
    ) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            try:
                if isinstance(request, Undecodable):
                    raise request.invalid()
                yield from behaviour(_checked(request) if requests else request, context)
            except Exception as exc:
                self._fail(method, start, exc, context)
            self._observe(method, "OK", time.perf_counter() - start)

        return wrapped

    def _fail(
        self, method: str, start: float, exc: Exception, context: grpc.ServicerContext
    ) -> None:
        if _is_abort(exc):  # context.abort() already set the status
            code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
            self._observe(method, code.name, time.perf_counter() - start)
            raise exc
        code, message = status_of(exc)
        self._observe(method, code.name, time.perf_counter() - start)
        context.abort(code, message)


def _is_abort(exc: Exception) -> bool:
    # The sync server's context.abort() raises a bare Exception after setting the status.
    return type(exc) is Exception
