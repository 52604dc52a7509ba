"""Service settings: environment variables prefixed DENSITYWATCH_ (e.g. DENSITYWATCH_GRPC_PORT)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from densitywatch.density.artifact import is_stream_name, is_version
from densitywatch.errors import UsageError

ENV_PREFIX = "DENSITYWATCH_"


class ServiceSettings(BaseSettings):
    """Every limit and timeout of the scoring service."""

    # `model_store` is a field, not one of pydantic's model_* names.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=()
    )

    grpc_host: str = Field(default="[::]", description="Address the gRPC server binds.")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0: any free).")
    metrics_host: str = Field(default="0.0.0.0", description="Address of the /metrics endpoint.")
    metrics_port: int = Field(
        default=9095, ge=0, le=65535, description="Prometheus /metrics HTTP port (0: any free)."
    )
    model_store: Path = Field(default=Path("store"), description="Artifact store folder.")
    poll_interval_s: float = Field(
        default=30.0, gt=0, description="Seconds between polls of the store for new versions."
    )
    batching_enabled: bool = Field(
        default=True, description="Coalesce concurrent requests into shared forward passes."
    )
    batch_max_points: int = Field(
        default=1024, ge=1, description="Most points in one coalesced forward pass."
    )
    batch_max_delay_ms: float = Field(
        default=2.0,
        ge=0,
        description="Longest wait for requests that are already being decoded to join a batch.",
    )
    batch_concurrency: int = Field(
        default=2,
        ge=1,
        description="Forward passes one stream runs at once (each on torch_threads threads): "
        "a second pass uses the core the first leaves to gRPC while callers wait.",
    )
    queue_limit: int = Field(
        default=16384,
        ge=1,
        description="Points waiting per stream before new requests get RESOURCE_EXHAUSTED.",
    )
    max_points_per_call: int = Field(
        default=10000, ge=1, description="Most points in one request (Score, Classify, Sample)."
    )
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest gRPC message received or sent."
    )
    max_concurrent_streams: int = Field(
        default=16,
        ge=1,
        description="Most concurrent ScoreStream calls (each holds a server thread).",
    )
    grace_period_s: float = Field(
        default=20.0, ge=0, description="Time in-flight calls get to finish on SIGTERM."
    )
    drain_delay_s: float = Field(
        default=1.0,
        ge=0,
        description="On SIGTERM, time (within the grace period) spent answering new calls "
        "UNAVAILABLE before the port closes, so clients move off instead of seeing CANCELLED.",
    )
    torch_threads: int = Field(default=1, ge=1, description="Intra-op torch threads.")
    trace_models: bool = Field(
        default=True,
        description="Score through a TorchScript trace of each model (checked equal to eager "
        "at load; the GIL is taken once per pass, not once per tensor operation).",
    )
    pinned: dict[str, str] = Field(
        default_factory=dict,
        description='Versions to serve instead of the newest calibrated, e.g. {"hosts":"000003"}.',
    )
    metrics_max_streams: int = Field(
        default=50, ge=1, description="Streams with their own metric labels; the rest: 'other'."
    )
    thread_pool_size: int = Field(
        default=256,
        ge=2,
        description="gRPC server worker threads (concurrent calls); started as load needs them.",
    )
    default_top_k: int = Field(
        default=3, ge=1, description="Features named per point when explaining and top_k is 0."
    )
    max_concurrent_streams_per_connection: int = Field(
        default=100,
        ge=1,
        description="Most concurrent calls (HTTP/2 streams) on one client connection; well "
        "under thread_pool_size, so one connection cannot hold every handler thread. A "
        "client near the limit sees some calls refused (UNAVAILABLE, RST_STREAM "
        "REFUSED_STREAM: the server counts a finished call's stream a moment after the "
        "client does), which it may retry at once; the Python client does.",
    )
    max_concurrent_rpcs: int = Field(
        default=256,
        ge=1,
        description="Most calls admitted at once; beyond it new calls get RESOURCE_EXHAUSTED "
        "at once. At most thread_pool_size, every admitted call has a thread.",
    )
    request_message_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait for a call's (first) request message after its headers; "
        "then the call is cancelled, so a caller that withholds it cannot hold a thread.",
    )
    health_thread_pool_size: int = Field(
        default=4,
        ge=1,
        description="Handler threads of the health service, apart from the other calls' "
        "pool, so health answers while every scoring thread is busy.",
    )
    max_error_message_bytes: int = Field(
        default=1024,
        ge=128,
        le=2048,
        description="Longest status message (UTF-8 bytes): gRPC clients refuse trailers over "
        "8 KiB, and percent-encoding can triple a message.",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM server certificate (chain); with tls_key_file: TLS on."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of the server.")
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle; when set, clients must present a certificate it signed "
        "(mutual TLS).",
    )
    auth_tokens: list[SecretStr] = Field(
        default_factory=list,
        description='Accepted bearer tokens (JSON list, e.g. ["t1","t2"]); any token or hash '
        "file turns authentication on.",
    )
    auth_token_hashes_file: Path | None = Field(
        default=None,
        description="File of accepted tokens' SHA-256 hex digests, one per line (# comments).",
    )
    auth_health_open: bool = Field(
        default=True, description="Let health checks through without a token (for probes)."
    )
    auth_reflection_open: bool = Field(
        default=False, description="Let server reflection through without a token."
    )
    auth_stream_health_open: bool = Field(
        default=False,
        description="Answer per-stream health checks without a token (they tell which streams "
        "exist); without it such callers get NOT_FOUND, as for an unknown stream.",
    )

    @field_validator("pinned")
    @classmethod
    def _pins(cls, pinned: dict[str, str]) -> dict[str, str]:
        # The message names no value: a setting's input is never echoed.
        if not all(is_stream_name(stream) for stream in pinned):
            raise ValueError("each key must be a stream name (letters, digits, '_', '.', '-')")
        if not all(is_version(version) for version in pinned.values()):
            raise ValueError('each value must be a version of six digits, e.g. "000003"')
        return pinned

    @model_validator(mode="after")
    def _tls_files_together(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self


def load_settings(**overrides: Any) -> ServiceSettings:
    """The settings from the environment and `overrides`; for any invalid one a UsageError
    naming its variable, never its value: values may be secrets (tokens), and pydantic's own
    messages quote them."""
    try:
        return ServiceSettings(**overrides)
    except ValidationError as e:
        problems = [
            _problem(error["loc"], error["msg"])
            for error in e.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise UsageError("invalid settings: " + "; ".join(problems)) from None
    except ValueError as e:
        # pydantic-settings' SettingsError (a ValueError; exported only from 2.3): a value
        # that is not JSON where JSON is expected.
        field = re.search(r'field "(\w+)"', str(e))
        name = _variable(field.group(1)) if field else f"a {ENV_PREFIX}* variable"
        raise UsageError(f"invalid settings: {name}: not valid JSON") from None


def _variable(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    message = message.removeprefix("Value error, ")
    # Only the field: deeper locations are keys of the caller's value (e.g. a pinned name).
    return f"{_variable(str(loc[0]))}: {message}" if loc else message
