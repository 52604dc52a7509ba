"""The DensityWatch gRPC servicer: every method converts the request, calls one method of
`Inference` (the domain), and converts the result back.

Handlers raise `densitywatch.errors` exceptions; `ErrorInterceptor` turns them into statuses.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.api.v1 import densitywatch_pb2_grpc as pb_grpc
from densitywatch.errors import DensityWatchError
from densitywatch.service.convert import points_message, stream_info
from densitywatch.service.errors import echoed
from densitywatch.service.inference import Explanations, Inference, Scored
from densitywatch.service.metrics import ServiceMetrics
from densitywatch.service.registry import Registry, StreamStatus
from densitywatch.service.settings import ServiceSettings


class DensityWatchServicer(pb_grpc.DensityWatchServicer):
    """Implements densitywatch.v1.DensityWatch over a Registry."""

    def __init__(
        self, registry: Registry, metrics: ServiceMetrics, settings: ServiceSettings
    ) -> None:
        self._inference = Inference(registry, metrics, settings)

    # -- Score / ScoreStream ----------------------------------------------------------------
    def Score(  # noqa: N802
        self, request: pb.ScoreRequest, context: grpc.ServicerContext
    ) -> pb.ScoreResponse:
        return self._score(request, context)

    def ScoreStream(  # noqa: N802
        self, request_iterator: Iterator[pb.ScoreRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ScoreResponse]:
        with self._inference.score_stream():
            for request in request_iterator:
                try:
                    yield self._score(request, context)
                except DensityWatchError as e:
                    e.message = f"request {echoed(request.request_id)}: {e.message}"
                    raise

    def _score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreResponse:
        top_k = request.top_k if request.explain else None
        scored = self._inference.score(
            request.stream, request.points, context.time_remaining, top_k
        )
        return _score_response(request, scored)

    # -- streams ----------------------------------------------------------------------------
    def ListStreams(  # noqa: N802
        self, request: pb.ListStreamsRequest, context: grpc.ServicerContext
    ) -> pb.ListStreamsResponse:
        return pb.ListStreamsResponse(streams=[_info(s) for s in self._inference.streams()])

    def GetStream(  # noqa: N802
        self, request: pb.GetStreamRequest, context: grpc.ServicerContext
    ) -> pb.StreamInfo:
        return _info(self._inference.stream(request.stream))

    # -- Sample / Classify ------------------------------------------------------------------
    def Sample(  # noqa: N802
        self, request: pb.SampleRequest, context: grpc.ServicerContext
    ) -> pb.SampleResponse:
        seed = request.seed if request.HasField("seed") else None
        sampled = self._inference.sample(request.stream, request.n, seed, context.time_remaining)
        return pb.SampleResponse(
            stream=request.stream,
            model_version=sampled.model.version,
            points=points_message(sampled.numbers, sampled.strings),
            seed=sampled.seed,
        )

    def Classify(  # noqa: N802
        self, request: pb.ClassifyRequest, context: grpc.ServicerContext
    ) -> pb.ClassifyResponse:
        result = self._inference.classify(
            request.streams, request.points, request.priors, context.time_remaining
        )
        return pb.ClassifyResponse(
            streams=result.streams,
            model_versions=result.model_versions,
            posterior=result.posterior.ravel().tolist(),
            log_prob=result.log_p.ravel().tolist(),
            best=result.best,
        )


def _score_response(request: pb.ScoreRequest, scored: Scored) -> pb.ScoreResponse:
    scores = scored.scores
    response = pb.ScoreResponse(
        request_id=request.request_id,
        stream=request.stream,
        model_version=scores.model.version,
        log_prob=scores.log_p.tolist(),
        p_value=scores.p_value.tolist(),
        level=scores.level.tolist(),
    )
    if scored.explanations is not None:
        names = scores.model.feature_names
        response.feature_names.extend(names)
        response.explanations.extend(_explanations(scored.explanations, names))
    return response


def _info(status: StreamStatus) -> pb.StreamInfo:
    if status.model is not None:
        return stream_info(status.model.artifact.manifest)
    return pb.StreamInfo(name=status.name, state=status.state, state_detail=status.detail)  # type: ignore[arg-type]


def _explanations(explained: Explanations, names: list[str]) -> list[pb.Explanation]:
    return [
        pb.Explanation(
            terms=row.tolist(), top_features=[names[i] for i in idx], top_terms=vals.tolist()
        )
        for row, idx, vals in zip(
            explained.terms, explained.top.tolist(), explained.top_terms, strict=True
        )
    ]
