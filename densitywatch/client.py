"""Python client of the densitywatch scoring service.

    from densitywatch.client import Client
    with Client("localhost:50051") as client:
        result = client.score("hosts", numbers)          # numpy (n, number-typed features)
        result = client.score("hosts", [{"cpu": 0.3, "os": "linux"}], explain=True)

Failed calls raise the typed errors of `densitywatch.errors` (StreamNotFoundError,
InvalidArgumentError, ...), all subclasses of DensityWatchError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.api.v1 import densitywatch_pb2_grpc as pb_grpc
from densitywatch.errors import DensityWatchError, InvalidArgumentError, for_status

__all__ = ["ClassifyResult", "Client", "DensityWatchError", "SampleResult", "ScoreResult"]

Records = np.ndarray | Sequence[Mapping[str, Any]]
T = TypeVar("T")


@dataclass
class ScoreResult:
    """Scores of a batch, all by `model_version`."""

    stream: str
    model_version: str
    log_prob: np.ndarray
    p_value: np.ndarray
    level: list[str]
    request_id: str = ""
    feature_names: list[str] = field(default_factory=list)
    terms: np.ndarray | None = None  # (n, D) when explained
    top_features: list[list[str]] | None = None
    top_terms: list[list[float]] | None = None

    @classmethod
    def from_proto(cls, r: pb.ScoreResponse) -> ScoreResult:
        result = cls(
            stream=r.stream,
            model_version=r.model_version,
            log_prob=np.array(r.log_prob, dtype=np.float64),
            p_value=np.array(r.p_value, dtype=np.float64),
            level=list(r.level),
            request_id=r.request_id,
            feature_names=list(r.feature_names),
        )
        if r.explanations:
            result.terms = np.array([list(e.terms) for e in r.explanations], dtype=np.float64)
            result.top_features = [list(e.top_features) for e in r.explanations]
            result.top_terms = [list(e.top_terms) for e in r.explanations]
        return result


@dataclass
class SampleResult:
    stream: str
    model_version: str
    seed: int
    numbers: np.ndarray  # (n, number-typed features)
    strings: list[list[str]]  # per record, the string-typed features
    number_names: list[str]
    string_names: list[str]

    def records(self) -> list[dict[str, Any]]:
        out = []
        for nums, strs in zip(self.numbers.tolist(), self.strings, strict=True):
            out.append(
                {
                    **dict(zip(self.number_names, nums, strict=True)),
                    **dict(zip(self.string_names, strs, strict=True)),
                }
            )
        return out


@dataclass
class ClassifyResult:
    streams: list[str]
    model_versions: list[str]
    posterior: np.ndarray  # (n, S)
    log_prob: np.ndarray  # (n, S)
    best: list[str]


# Every method only reads, so a call the server refused before running it (UNAVAILABLE: a
# stream over the connection's limit, a replica draining) is safe to send again. gRPC's
# retry policy does it with backoff, within the call's deadline.
RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "densitywatch.v1.DensityWatch"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.005s",
                    "maxBackoff": "0.2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class Client:
    """A connection to one densitywatch server (thread-safe; reuse it)."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        timeout: float | None = 30.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        channel: grpc.Channel | None = None,
        tls: bool = False,
        root_certificates: Path | bytes | None = None,
        client_certificate: Path | bytes | None = None,
        client_key: Path | bytes | None = None,
        token: str | None = None,
    ) -> None:
        """TLS when `tls` or any certificate is given (PEM paths or bytes; the system roots
        when `root_certificates` is None); `client_certificate` + `client_key` for mutual
        TLS; `token` is sent as `authorization: Bearer <token>` on every call."""
        if (client_certificate is None) != (client_key is None):
            # grpc aborts the whole process (SIGABRT) on half a pair.
            raise ValueError("client_certificate and client_key must be given together")
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", RETRY_SERVICE_CONFIG),
        ]
        if channel is None and (tls or root_certificates or client_certificate or client_key):
            credentials = grpc.ssl_channel_credentials(
                _pem(root_certificates), _pem(client_key), _pem(client_certificate)
            )
            channel = grpc.secure_channel(target, credentials, options=options)
        self._channel = channel or grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.DensityWatchStub(self._channel)
        self._layouts: dict[str, tuple[list[str], list[str]]] = {}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------
    def score(
        self,
        stream: str,
        data: Records,
        strings: Sequence[Sequence[str]] | None = None,
        *,
        explain: bool = False,
        top_k: int = 0,
        timeout: float | None = None,
    ) -> ScoreResult:
        """Score records: numbers (n, number-typed) [+ strings rows], or a list of dicts."""
        request = self.score_request(stream, data, strings, explain=explain, top_k=top_k)
        response = self._call(self.stub.Score, request, timeout)
        return ScoreResult.from_proto(response)

    def score_request(
        self,
        stream: str,
        data: Records,
        strings: Sequence[Sequence[str]] | None = None,
        *,
        explain: bool = False,
        top_k: int = 0,
        request_id: str = "",
    ) -> pb.ScoreRequest:
        return pb.ScoreRequest(
            stream=stream,
            points=self.points(stream, data, strings),
            explain=explain,
            top_k=top_k,
            request_id=request_id,
        )

    def score_stream(
        self,
        stream: str,
        batches: Iterable[Records | tuple[np.ndarray, Sequence[Sequence[str]]]],
        *,
        explain: bool = False,
        top_k: int = 0,
        timeout: float | None = None,
    ) -> Iterator[ScoreResult]:
        """Score batches over one ScoreStream call; yields one result per batch, in order."""

        def requests() -> Iterator[pb.ScoreRequest]:
            for i, batch in enumerate(batches):
                data, strings = batch if isinstance(batch, tuple) else (batch, None)
                yield self.score_request(
                    stream, data, strings, explain=explain, top_k=top_k, request_id=str(i)
                )

        yield from self.score_requests(requests(), timeout=timeout)

    def score_requests(
        self, requests: Iterator[pb.ScoreRequest], *, timeout: float | None = None
    ) -> Iterator[ScoreResult]:
        """ScoreStream over ready-made requests (request_id chosen by the caller)."""
        try:
            responses = self.stub.ScoreStream(
                requests, timeout=self._timeout(timeout), metadata=self._metadata
            )
            for response in responses:
                yield ScoreResult.from_proto(response)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def list_streams(self, timeout: float | None = None) -> list[pb.StreamInfo]:
        return list(self._call(self.stub.ListStreams, pb.ListStreamsRequest(), timeout).streams)

    def get_stream(self, stream: str, timeout: float | None = None) -> pb.StreamInfo:
        info = self._call(self.stub.GetStream, pb.GetStreamRequest(stream=stream), timeout)
        self._layouts[stream] = _layout(info)
        return info

    def sample(
        self, stream: str, n: int, seed: int | None = None, timeout: float | None = None
    ) -> SampleResult:
        """n records drawn from the stream's model; the same seed gives the same records
        (n = 0: an empty result)."""
        request = pb.SampleRequest(stream=stream, n=n)
        if seed is not None:
            request.seed = seed
        r = self._call(self.stub.Sample, request, timeout)
        number_names, string_names = self.layout(stream)
        numbers = np.array(r.points.numbers, dtype=np.float64).reshape(
            r.points.count, len(number_names)
        )
        width = len(string_names)
        flat = list(r.points.strings)
        rows = [flat[i * width : (i + 1) * width] for i in range(r.points.count)]
        return SampleResult(
            r.stream, r.model_version, r.seed, numbers, rows, number_names, string_names
        )

    def classify(
        self,
        streams: Sequence[str],
        data: Records,
        strings: Sequence[Sequence[str]] | None = None,
        *,
        priors: Sequence[float] | None = None,
        timeout: float | None = None,
    ) -> ClassifyResult:
        """Posterior over candidate streams per point (layout taken from the first stream)."""
        request = pb.ClassifyRequest(
            streams=list(streams),
            points=self.points(streams[0], data, strings),
            priors=list(priors or []),
        )
        r = self._call(self.stub.Classify, request, timeout)
        s = len(r.streams)
        return ClassifyResult(
            streams=list(r.streams),
            model_versions=list(r.model_versions),
            posterior=np.array(r.posterior, dtype=np.float64).reshape(-1, s),
            log_prob=np.array(r.log_prob, dtype=np.float64).reshape(-1, s),
            best=list(r.best),
        )

    # -- points -----------------------------------------------------------------------------
    def layout(self, stream: str) -> tuple[list[str], list[str]]:
        """(number-typed feature names, string-typed feature names) of a stream (cached)."""
        if stream not in self._layouts:
            self.get_stream(stream)
        return self._layouts[stream]

    def points(
        self, stream: str, data: Records, strings: Sequence[Sequence[str]] | None = None
    ) -> pb.Points:
        """Points from a numeric array (+ string rows) or from a list of dicts."""
        if isinstance(data, np.ndarray):
            numbers = np.asarray(data, dtype=np.float64)
            if numbers.ndim == 1:
                numbers = numbers.reshape(1, -1)
            flat = [s for row in strings or [] for s in row]
            return pb.Points(numbers=numbers.ravel().tolist(), strings=flat, count=len(numbers))
        number_names, string_names = self.layout(stream)
        return records_to_points(data, number_names, string_names)

    def _timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.timeout

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None


def _pem(value: Path | bytes | None) -> bytes | None:
    return value.read_bytes() if isinstance(value, Path) else value


def records_to_points(
    records: Sequence[Mapping[str, Any]], number_names: list[str], string_names: list[str]
) -> pb.Points:
    """Dict records -> Points; raises InvalidArgumentError naming the point and feature."""
    numbers: list[float] = []
    strings: list[str] = []
    for i, record in enumerate(records):
        for name in number_names:
            numbers.append(_number(record, name, i))
        for name in string_names:
            strings.append(_string(record, name, i))
    return pb.Points(numbers=numbers, strings=strings, count=len(records))


def _value(record: Mapping[str, Any], name: str, i: int) -> Any:
    if name not in record:
        raise InvalidArgumentError(f"point {i}: feature {name!r} is missing", i, name, "width")
    return record[name]


def _number(record: Mapping[str, Any], name: str, i: int) -> float:
    value = _value(record, name, i)
    if isinstance(value, bool | str | bytes) or not isinstance(value, int | float | np.number):
        raise InvalidArgumentError(
            f"point {i}: feature {name!r} must be a number, got {value!r}", i, name, "type"
        )
    return float(value)


def _string(record: Mapping[str, Any], name: str, i: int) -> str:
    value = _value(record, name, i)
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"point {i}: feature {name!r} must be a string, got {value!r}", i, name, "type"
        )
    return value


def _layout(info: pb.StreamInfo) -> tuple[list[str], list[str]]:
    numbers = [f.name for f in info.features if f.raw_type == "number"]
    strings = [f.name for f in info.features if f.raw_type == "string"]
    return numbers, strings


def from_rpc_error(error: grpc.RpcError) -> DensityWatchError:
    """The typed error for a failed call; its `code` is the call's `grpc.StatusCode`."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    exc = for_status(code.name)(f"{code.name}: {details}")
    exc.code = code
    return exc
