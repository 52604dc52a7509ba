"""The ONE place where the server turns errors into gRPC statuses.

Every error class in `densitywatch.errors` names its gRPC status; `status_of` maps any
exception (ours, or an unexpected one: INTERNAL, logged) to (code, message), and
`ErrorInterceptor` applies it to every RPC and records the request-duration metric. The
client maps status codes back to the same classes (`densitywatch.errors.for_status`), so
callers catch one hierarchy on both sides.

`ErrorInterceptor` builds the handler grpc runs for every call, so it also decides what a
call may hold while it waits: every method is served as request-streaming, so that the
handler, not grpc, waits for the request message, under the `MessageWatchdog`'s timeout
(a unary handler would hold its thread for as long as the caller withholds the message);
a service can run on its own thread pool; and health's Watch keeps grpc's non-blocking
form, in which an open Watch holds no thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from densitywatch.errors import DensityWatchError, InvalidArgumentError
from densitywatch.service.watchdog import MessageWatchdog

log = logging.getLogger(__name__)

#: The metric label of every method the service does not define (paths are caller input).
UNKNOWN_METHOD = "unknown"
#: Characters of a caller's value (a stream name, a request id) quoted in a status message.
ECHO_CHARS = 200


def echoed(value: str) -> str:
    """`value` quoted for a status message, cut to ECHO_CHARS characters.

    A value echoed whole can push the status past gRPC's metadata limit, and the caller
    then sees RESOURCE_EXHAUSTED ("metadata size exceeds hard limit") for any error.
    """
    if len(value) <= ECHO_CHARS:
        return repr(value)
    return f"{value[:ECHO_CHARS]!r}... ({len(value)} characters)"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message for any exception raised while serving."""
    if isinstance(exc, DensityWatchError):
        return grpc.StatusCode[exc.status], exc.message
    log.exception("unexpected error while serving", exc_info=exc)
    # The exception's text stays in the log: it may hold paths or the caller's input.
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__} (logged)"


def fitted(message: str, max_bytes: int) -> str:
    """`message` cut to `max_bytes` of UTF-8 (at a character boundary)."""
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return message
    return encoded[: max_bytes - 3].decode("utf-8", "ignore") + "..."


DurationObserver = Callable[[str, str, float], None]


@dataclass(frozen=True)
class Undecodable:
    """A request payload its method's deserializer refused (bad protobuf, invalid UTF-8)."""

    error: str

    def invalid(self) -> InvalidArgumentError:
        return InvalidArgumentError(f"malformed request message: {self.error}", reason="decode")


class MessageTimeoutError(Exception):
    """The watchdog cancelled the call: its request message did not arrive in time."""


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


def _checked(request: Any) -> Any:
    if isinstance(request, Undecodable):
        raise request.invalid()
    return request


class _Requests:
    """A call's request messages: the first awaited under the watchdog, each checked."""

    __slots__ = ("_context", "_first", "_requests", "_watchdog")

    def __init__(
        self,
        requests: Iterator[Any],
        context: grpc.ServicerContext,
        watchdog: MessageWatchdog | None,
    ) -> None:
        self._requests = requests
        self._context = context
        self._watchdog = watchdog
        self._first = True

    def __iter__(self) -> _Requests:
        return self

    def __next__(self) -> Any:
        if self._first:
            self._first = False
            return _checked(_first_message(self._requests, self._context, self._watchdog))
        return _checked(next(self._requests))


def _first_message(
    requests: Iterator[Any], context: grpc.ServicerContext, watchdog: MessageWatchdog | None
) -> Any:
    """The next message; MessageTimeoutError if the watchdog cancelled the call meanwhile."""
    if watchdog is None:
        return next(requests)
    armed = watchdog.arm(context)
    try:
        return next(requests)
    except (StopIteration, grpc.RpcError):
        # A cancelled call ends its requests either way, depending on which of grpc's
        # events comes first.
        if armed.expired:
            raise MessageTimeoutError from None
        raise
    finally:
        armed.disarm()


_MAX_CACHED_HANDLERS = 1024  # bounds the cache if some interceptor built handlers per call


class ErrorInterceptor(grpc.ServerInterceptor):
    """Converts exceptions to statuses for every method and times every call.

    `methods`: the full paths ("/package.Service/Method") the server defines; every other
    path is labelled `unknown` in the metrics. `pools`: a thread pool per service name for
    services that must not share the default one. `max_message_bytes` bounds every status
    message."""

    def __init__(
        self,
        observe: DurationObserver,
        methods: Collection[str],
        watchdog: MessageWatchdog | None = None,
        pools: Mapping[str, futures.ThreadPoolExecutor] | None = None,
        max_message_bytes: int = 1024,
    ) -> None:
        self._observe = observe
        self._methods = frozenset(methods)
        self._watchdog = watchdog
        self._pools = dict(pools or {})
        self._max_message_bytes = max_message_bytes
        # Wrapped once per (method, handler), not per call: the handlers behind a method are
        # fixed (under token auth, also one of a few cached refusal handlers), and every
        # unknown path counts as one method. The cache holds each handler, so no other
        # object can take its id while its entry exists.
        self._wrapped: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        path = handler_call_details.method
        if path not in self._methods:
            path = UNKNOWN_METHOD
        key = (path, id(handler))
        cached = self._wrapped.get(key)
        if cached is not None:
            return cached[1]
        if path == UNKNOWN_METHOD:
            label, pool = UNKNOWN_METHOD, None
        else:
            service, _, label = path.lstrip("/").rpartition("/")
            pool = self._pools.get(service)
        wrapped = self._wrap(label, handler, pool)
        if len(self._wrapped) < _MAX_CACHED_HANDLERS:
            self._wrapped[key] = (handler, wrapped)
        return wrapped

    def _wrap(
        self,
        label: str,
        handler: grpc.RpcMethodHandler,
        pool: futures.ThreadPoolExecutor | None,
    ) -> grpc.RpcMethodHandler:
        behaviour: Callable[..., Any]
        if handler.unary_unary is not None:
            behaviour, unary_response = self._unary(label, handler.unary_unary), True
        elif handler.stream_unary is not None:
            behaviour, unary_response = self._unary(label, handler.stream_unary, False), True
        elif handler.unary_stream is not None:
            inner = handler.unary_stream
            if getattr(inner, "experimental_non_blocking", False):
                behaviour = self._non_blocking(label, inner)
            else:
                behaviour = self._streaming(label, inner)
            unary_response = False
        else:
            behaviour = self._streaming(label, handler.stream_stream, False)
            unary_response = False
        if pool is not None:
            # grpc runs a behaviour that carries this attribute on that pool (its health
            # servicer's option, `experimental_thread_pool`).
            behaviour.experimental_thread_pool = pool  # type: ignore[attr-defined]
        make = (
            grpc.stream_unary_rpc_method_handler
            if unary_response
            else grpc.stream_stream_rpc_method_handler
        )
        return make(
            behaviour,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _request(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        """The one request message of a unary-request method."""
        try:
            return _checked(_first_message(requests, context, self._watchdog))
        except StopIteration:
            raise InvalidArgumentError(
                "malformed request: no request message", reason="decode"
            ) from None

    def _unary(
        self, label: str, behaviour: Callable[..., Any], unary_request: bool = True
    ) -> Callable[..., Any]:
        def wrapped(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                if unary_request:
                    request = self._request(requests, context)
                    start = time.perf_counter()  # time the work, not the caller's upload
                else:
                    request = _Requests(requests, context, self._watchdog)
                response = behaviour(request, context)
            except Exception as exc:
                self._fail(label, start, exc, context)
                raise
            self._observe(label, "OK", time.perf_counter() - start)
            return response

        return wrapped

    def _streaming(
        self, label: str, behaviour: Callable[..., Any], unary_request: bool = True
    ) -> Callable[..., Any]:
        def wrapped(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            try:
                if unary_request:
                    request = self._request(requests, context)
                    start = time.perf_counter()
                else:
                    request = _Requests(requests, context, self._watchdog)
                yield from behaviour(request, context)
            except Exception as exc:
                self._fail(label, start, exc, context)
                raise
            self._observe(label, "OK", time.perf_counter() - start)

        return wrapped

    def _non_blocking(self, label: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        """A behaviour that registers callbacks and returns (health's Watch): the call stays
        open without a thread. Its duration is the time to register."""

        def wrapped(
            requests: Iterator[Any],
            context: grpc.ServicerContext,
            send_response: Callable[[Any], None],
        ) -> None:
            start = time.perf_counter()
            try:
                request = self._request(requests, context)
                start = time.perf_counter()
                behaviour(request, context, send_response)
            except Exception as exc:
                self._fail(label, start, exc, context)
                raise
            self._observe(label, "OK", time.perf_counter() - start)

        wrapped.experimental_non_blocking = True  # type: ignore[attr-defined]
        return wrapped

    def _fail(
        self, method: str, start: float, exc: Exception, context: grpc.ServicerContext
    ) -> None:
        """Record `exc` and abort the call with its status; return (the caller re-raises) for
        an exception that already carries its status. Never raises `exc` itself: its
        traceback would hold this frame, and this frame `exc`, a cycle that keeps the call,
        and with it the connection's HTTP/2 stream, alive until the garbage collector runs."""
        elapsed = time.perf_counter() - start
        if _is_abort(exc):  # context.abort() already set the status
            code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
            self._observe(method, code.name, elapsed)
            return
        if isinstance(exc, grpc.RpcError):  # the caller went away: grpc knows, and is quiet
            self._observe(method, grpc.StatusCode.CANCELLED.name, elapsed)
            return
        if isinstance(exc, MessageTimeoutError):  # the call is already cancelled
            self._observe(method, grpc.StatusCode.CANCELLED.name, elapsed)
            context.abort(grpc.StatusCode.CANCELLED, "no request message in time")
        code, message = status_of(exc)
        self._observe(method, code.name, elapsed)
        context.abort(code, fitted(message, self._max_message_bytes))


def _is_abort(exc: Exception) -> bool:
    # The sync server's context.abort() raises a bare Exception after setting the status.
    return type(exc) is Exception
