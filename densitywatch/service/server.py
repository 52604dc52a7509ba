"""Assembles the gRPC server: servicer, health, reflection, interceptors, metrics endpoint.

Why the sync `grpc.server` with a thread pool (a LIFO one, `densitywatch.service.executor`)
rather than grpc.aio: scoring is CPU-bound torch work that releases the GIL inside kernels,
so a thread per call is the natural unit; the leader/follower batcher coalesces concurrent
calls without an event loop or thread hand-off, and health, reflection and interceptors are
mature in the sync API.

What a thread per call costs is that a call holds its thread while it waits, so what a
caller can hold is bounded here: calls per connection (`max_concurrent_streams_per_connection`,
well under the pool), calls admitted at once (`max_concurrent_rpcs`), the wait for a
request message (`request_message_timeout_s`, the watchdog); calls without a valid token are
refused from their headers; health runs on a pool of its own, and its Watch holds no thread.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.api.v1 import densitywatch_pb2_grpc as pb_grpc
from densitywatch.density.artifact import ArtifactStore
from densitywatch.errors import AccessConfigError, StartupError
from densitywatch.service.auth import (
    TokenAuthInterceptor,
    accepted_digests,
    open_services,
    server_credentials,
)
from densitywatch.service.errors import ErrorInterceptor
from densitywatch.service.executor import LifoThreadPoolExecutor, for_grpc
from densitywatch.service.metrics import ServiceMetrics
from densitywatch.service.reflection import enable_reflection
from densitywatch.service.reflection import method_paths as reflection_paths
from densitywatch.service.registry import Registry, StreamStatus
from densitywatch.service.servicer import DensityWatchServicer
from densitywatch.service.settings import ServiceSettings
from densitywatch.service.watchdog import MessageWatchdog

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DensityWatch"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def method_paths() -> list[str]:
    """Every method path the server defines (the metrics label only these)."""
    services = [
        pb.DESCRIPTOR.services_by_name["DensityWatch"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ]
    paths = [f"/{s.full_name}/{m.name}" for s in services for m in s.methods]
    return [*paths, *reflection_paths()]


class DensityWatchServer:
    """The scoring service: `start()` listens (NOT_SERVING), `load()` loads the models and
    flips health to SERVING, `stop()` drains within the grace period."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics(settings.metrics_max_streams)
        self.health = health.HealthServicer()
        self.registry = Registry(
            ArtifactStore(settings.model_store),
            self.metrics,
            pinned=settings.pinned,
            on_change=self._on_streams_changed,
            trace=settings.trace_models,
        )
        self.servicer = DensityWatchServicer(self.registry, self.metrics, settings)
        self.port = 0
        self.metrics_port = 0
        self._server: grpc.Server | None = None
        self._http: Any = None
        self._watchdog: MessageWatchdog | None = None
        self._health_pool: futures.ThreadPoolExecutor | None = None
        self._stopped = threading.Event()

    def start(self) -> int:
        """Listen on the gRPC and metrics ports (health NOT_SERVING); returns the gRPC port.

        Raises StartupError (AccessConfigError) for unusable TLS or token files."""
        s = self.settings
        torch.set_num_threads(s.torch_threads)
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.max_concurrent_streams", s.max_concurrent_streams_per_connection),
            ("grpc.so_reuseport", 0),
        ]
        credentials = server_credentials(s)
        digests = accepted_digests(s)
        if not digests and s.auth_token_hashes_file is not None:
            raise AccessConfigError(f"{s.auth_token_hashes_file}: no token hashes")
        self._watchdog = MessageWatchdog(s.request_message_timeout_s)
        # grpc requires this class for a per-method pool (`experimental_thread_pool`).
        self._health_pool = futures.ThreadPoolExecutor(
            max_workers=s.health_thread_pool_size, thread_name_prefix="grpc-health"
        )
        interceptors: list[grpc.ServerInterceptor] = [
            ErrorInterceptor(
                self.metrics.observe_request,
                method_paths(),
                watchdog=self._watchdog,
                pools={health.SERVICE_NAME: self._health_pool},
                max_message_bytes=s.max_error_message_bytes,
            )
        ]
        if digests:  # inside ErrorInterceptor, so refusals are timed and counted too
            public_health = None if s.auth_stream_health_open else ("", SERVICE_NAME)
            interceptors.append(TokenAuthInterceptor(digests, open_services(s), public_health))
        server = grpc.server(
            for_grpc(
                LifoThreadPoolExecutor(  # see service.executor: keeps handler threads warm
                    max_workers=s.thread_pool_size,
                    thread_name_prefix="grpc",
                    # The thread count is per thread (OpenMP): a handler thread that never
                    # sets it runs its forward passes with the machine's default.
                    initializer=torch.set_num_threads,
                    initargs=(s.torch_threads,),
                )
            ),
            interceptors=interceptors,
            options=options,
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
        )
        pb_grpc.add_DensityWatchServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection(
            server, [pb.DESCRIPTOR, health_pb2.DESCRIPTOR], [SERVICE_NAME, health.SERVICE_NAME]
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, NOT_SERVING)
        address = f"{s.grpc_host}:{s.grpc_port}"
        if credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        if self.port == 0:
            raise StartupError(f"could not bind gRPC to {s.grpc_host}:{s.grpc_port}")
        server.start()
        self._server = server
        self._http, _ = start_http_server(
            s.metrics_port, addr=s.metrics_host, registry=self.metrics.registry
        )
        self.metrics_port = self._http.server_port
        log.info(
            "gRPC on port %d (%s, %s), metrics on port %d",
            self.port,
            "mutual TLS" if s.tls_client_ca_file else "TLS" if credentials else "plaintext",
            "token auth" if digests else "no auth",
            self.metrics_port,
        )
        return self.port

    def load(self) -> None:
        """Load every stream's model, flip health to SERVING, start polling the store."""
        self.registry.refresh()
        if not self.registry.statuses():
            log.warning("no streams in the model store %s", self.settings.model_store)
        if not self.registry.draining:
            for name in ("", SERVICE_NAME):
                self.health.set(name, SERVING)
        self.registry.start_polling(self.settings.poll_interval_s)

    def _on_streams_changed(self, streams: dict[str, StreamStatus]) -> None:
        if self.registry.draining:
            return
        for name, status in streams.items():
            self.health.set(f"{SERVICE_NAME}/{name}", SERVING if status.model else NOT_SERVING)

    def stop(self, grace_s: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new work, let in-flight calls finish within the grace."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        self.health.enter_graceful_shutdown()
        self.registry.draining = True
        self.registry.stop()
        delay = min(self.settings.drain_delay_s, grace)
        # Calls that reach grpc after its stop() are CANCELLED without reaching a handler;
        # during the delay they get UNAVAILABLE, which clients retry elsewhere.
        time.sleep(delay)
        if self._server is not None:
            self._server.stop(grace - delay).wait()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._health_pool is not None:
            self._health_pool.shutdown(wait=False)
        log.info("stopped")
