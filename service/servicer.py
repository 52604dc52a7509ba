"""The DensityWatch gRPC servicer: validation, scoring through the batcher, responses.

Handlers raise `service.errors` exceptions; `ErrorInterceptor` turns them into statuses.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import torch

from density.classify import posterior
from protos.densitywatch.v1 import densitywatch_pb2 as pb
from protos.densitywatch.v1 import densitywatch_pb2_grpc as pb_grpc
from service.convert import points_message, stream_info
from service.errors import (
    DeadlineExceededError,
    DensityWatchError,
    InvalidArgumentError,
    ResourceExhaustedError,
)
from service.metrics import ServiceMetrics
from service.registry import Registry, StreamStatus
from service.scorer import Batcher, Job, Scores, StreamModel
from service.settings import ServiceSettings


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value; raises if it has already passed."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= 0:
        raise DeadlineExceededError("the deadline passed before the call could be scored")
    return time.monotonic() + remaining


class DensityWatchServicer(pb_grpc.DensityWatchServicer):
    """Implements densitywatch.v1.DensityWatch over a Registry."""

    def __init__(
        self, registry: Registry, metrics: ServiceMetrics, settings: ServiceSettings
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._settings = settings
        self._batchers: dict[str, Batcher] = {}
        self._lock = threading.Lock()
        self._open_streams = 0

    def _batcher(self, stream: str) -> Batcher:
        batcher = self._batchers.get(stream)
        if batcher is None:
            s = self._settings
            with self._lock:
                batcher = self._batchers.setdefault(
                    stream,
                    Batcher(
                        self._metrics,
                        enabled=s.batching_enabled,
                        max_points=s.batch_max_points,
                        max_delay_s=s.batch_max_delay_ms / 1000.0,
                        queue_limit=s.queue_limit,
                        concurrency=s.batch_concurrency,
                    ),
                )
        return batcher

    def _encode(self, model: StreamModel, points: pb.Points, stream: str) -> np.ndarray:
        try:
            numbers, strings = model.encoder.decode_points(
                points, stream, self._settings.max_points_per_call
            )
        except InvalidArgumentError as e:
            self._metrics.invalid(stream, e.reason)
            raise
        return model.encoder.encode(numbers, strings)

    # -- Score / ScoreStream ----------------------------------------------------------------
    def Score(  # noqa: N802
        self, request: pb.ScoreRequest, context: grpc.ServicerContext
    ) -> pb.ScoreResponse:
        return self._score(request, context)

    def ScoreStream(  # noqa: N802
        self, request_iterator: Iterator[pb.ScoreRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ScoreResponse]:
        with self._lock:
            if self._open_streams >= self._settings.max_concurrent_streams:
                raise ResourceExhaustedError(
                    f"{self._open_streams} ScoreStream calls already open "
                    f"(limit {self._settings.max_concurrent_streams}): retry later"
                )
            self._open_streams += 1
        try:
            for request in request_iterator:
                try:
                    yield self._score(request, context)
                except DensityWatchError as e:
                    e.message = f"request {request.request_id!r}: {e.message}"
                    raise
        finally:
            with self._lock:
                self._open_streams -= 1

    def _score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:
        model = self._registry.get(request.stream)
        batcher = self._batcher(request.stream)
        with batcher.arriving() as arrival:
            x = self._encode(model, request.points, request.stream)
            job = Job(model, x, deadline_of(context), explain=request.explain)
            scores = batcher.score(job, arrival)
        return self._response(request, scores)

    def _response(self, request: pb.ScoreRequest, scores: Scores) -> pb.ScoreResponse:
        response = pb.ScoreResponse(
            request_id=request.request_id,
            stream=request.stream,
            model_version=scores.model.version,
            log_prob=scores.log_p.tolist(),
            p_value=scores.p_value.tolist(),
            level=scores.level.tolist(),
        )
        if request.explain:
            names = scores.model.feature_names
            top_k = min(request.top_k or self._settings.default_top_k, len(names))
            response.feature_names.extend(names)
            assert scores.terms is not None  # the batch was scored with terms for this job
            response.explanations.extend(_explanations(scores.terms, names, top_k))
        return response

    # -- streams ----------------------------------------------------------------------------
    def ListStreams(  # noqa: N802
        self, request: pb.ListStreamsRequest, context: grpc.ServicerContext
    ) -> pb.ListStreamsResponse:
        self._registry.check_ready()
        return pb.ListStreamsResponse(streams=[_info(s) for s in self._registry.statuses()])

    def GetStream(  # noqa: N802
        self, request: pb.GetStreamRequest, context: grpc.ServicerContext
    ) -> pb.StreamInfo:
        return _info(self._registry.status(request.stream))

    # -- Sample / Classify ------------------------------------------------------------------
    def Sample(  # noqa: N802
        self, request: pb.SampleRequest, context: grpc.ServicerContext
    ) -> pb.SampleResponse:
        model = self._registry.get(request.stream)
        limit = self._settings.max_points_per_call
        if request.n > limit:
            raise ResourceExhaustedError(f"asked for {request.n} samples; the limit is {limit}")
        seed = request.seed if request.HasField("seed") else secrets.randbits(63)
        deadline_of(context)
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            x = model.model.sample(request.n, generator).numpy()
        numbers, strings = model.schema.decode(x)
        return pb.SampleResponse(
            stream=request.stream,
            model_version=model.version,
            points=points_message(numbers, strings),
            seed=seed,
        )

    def Classify(  # noqa: N802
        self, request: pb.ClassifyRequest, context: grpc.ServicerContext
    ) -> pb.ClassifyResponse:
        streams = list(request.streams)
        if not streams or len(set(streams)) != len(streams):
            raise InvalidArgumentError("classify needs one or more distinct candidate streams")
        priors = np.asarray(request.priors, dtype=np.float64) if request.priors else None
        if priors is not None and (
            len(priors) != len(streams)
            or not np.isfinite(priors).all()
            or (priors < 0).any()
            or priors.sum() <= 0
        ):
            raise InvalidArgumentError(
                f"priors must be {len(streams)} finite non-negative numbers with a positive sum"
            )
        models = [self._registry.get(s) for s in streams]
        deadline_of(context)
        log_p = np.stack(
            [m.forward(self._encode(m, request.points, m.stream), terms=False)[0] for m in models],
            axis=1,
        )
        post = posterior(log_p, priors)
        return pb.ClassifyResponse(
            streams=streams,
            model_versions=[m.version for m in models],
            posterior=post.ravel().tolist(),
            log_prob=log_p.ravel().tolist(),
            best=[streams[i] for i in np.argmax(post, axis=1).tolist()],
        )


def _info(status: StreamStatus) -> pb.StreamInfo:
    if status.model is not None:
        return stream_info(status.model.artifact.manifest)
    return pb.StreamInfo(name=status.name, state=status.state, state_detail=status.detail)  # type: ignore[arg-type]


def _explanations(terms: np.ndarray, names: list[str], top_k: int) -> list[pb.Explanation]:
    top = np.argsort(terms, axis=1, kind="stable")[:, :top_k]
    top_terms = np.take_along_axis(terms, top, axis=1)
    return [
        pb.Explanation(
            terms=row.tolist(), top_features=[names[i] for i in idx], top_terms=vals.tolist()
        )
        for row, idx, vals in zip(terms, top.tolist(), top_terms, strict=True)
    ]
