"""The service's error hierarchy and the ONE place that turns errors into gRPC statuses.

Each `DensityWatchError` subclass carries its gRPC status code. `status_of` maps any
exception (ours, `density.schema.EncodingError`, or unexpected ones) to (code, message);
`ErrorInterceptor` applies it to every RPC and records the request-duration metric. The
client (`densitywatch.client`) maps status codes back to the same classes with
`from_rpc_error`, so callers catch one hierarchy on both sides. Imports only grpc, so the
client can use it without pulling torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)


class DensityWatchError(Exception):
    """Base of every error the service reports; `code` is its gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(DensityWatchError):
    """Bad input: wrong width, NaN/inf, wrong type. Names the point and feature when known."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        index: int | None = None,
        feature: str | None = None,
        reason: str = "invalid",
    ) -> None:
        super().__init__(message)
        self.index = index
        self.feature = feature
        self.reason = reason


class StreamNotFoundError(DensityWatchError):
    code = grpc.StatusCode.NOT_FOUND


class NotCalibratedError(DensityWatchError):
    """The stream exists but has no servable (calibrated, loadable) version."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(DensityWatchError):
    """Too many points in a call, or the scoring queue is full."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(DensityWatchError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnavailableError(DensityWatchError):
    """Models still loading, or the server is draining: retry elsewhere or later."""

    code = grpc.StatusCode.UNAVAILABLE


class InternalError(DensityWatchError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[DensityWatchError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        StreamNotFoundError,
        NotCalibratedError,
        ResourceExhaustedError,
        DeadlineExceededError,
        UnavailableError,
        InternalError,
    )
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message for any exception raised while serving."""
    if isinstance(exc, DensityWatchError):
        return exc.code, exc.message
    from density.schema import EncodingError  # numpy + pydantic only

    if isinstance(exc, EncodingError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    log.exception("unexpected error while serving", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def from_rpc_error(error: grpc.RpcError) -> DensityWatchError:
    """The typed error for a failed call (client side)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    cls = _BY_CODE.get(code, DensityWatchError)
    exc = cls(f"{code.name}: {details}")
    exc.code = code
    return exc


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
