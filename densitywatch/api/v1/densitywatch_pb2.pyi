from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_STATE_UNSPECIFIED: _ClassVar[StreamState]
    STREAM_STATE_SERVING: _ClassVar[StreamState]
    STREAM_STATE_UNCALIBRATED: _ClassVar[StreamState]
    STREAM_STATE_FAILED: _ClassVar[StreamState]
STREAM_STATE_UNSPECIFIED: StreamState
STREAM_STATE_SERVING: StreamState
STREAM_STATE_UNCALIBRATED: StreamState
STREAM_STATE_FAILED: StreamState

class Points(_message.Message):
    __slots__ = ("numbers", "strings", "count")
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    numbers: _containers.RepeatedScalarFieldContainer[float]
    strings: _containers.RepeatedScalarFieldContainer[str]
    count: int
    def __init__(self, numbers: _Optional[_Iterable[float]] = ..., strings: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("stream", "points", "explain", "top_k", "request_id")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    stream: str
    points: Points
    explain: bool
    top_k: int
    request_id: str
    def __init__(self, stream: _Optional[str] = ..., points: _Optional[_Union[Points, _Mapping]] = ..., explain: bool = ..., top_k: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("terms", "top_features", "top_terms")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    TOP_FEATURES_FIELD_NUMBER: _ClassVar[int]
    TOP_TERMS_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedScalarFieldContainer[float]
    top_features: _containers.RepeatedScalarFieldContainer[str]
    top_terms: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, terms: _Optional[_Iterable[float]] = ..., top_features: _Optional[_Iterable[str]] = ..., top_terms: _Optional[_Iterable[float]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("request_id", "stream", "model_version", "log_prob", "p_value", "level", "explanations", "feature_names")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOG_PROB_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    stream: str
    model_version: str
    log_prob: _containers.RepeatedScalarFieldContainer[float]
    p_value: _containers.RepeatedScalarFieldContainer[float]
    level: _containers.RepeatedScalarFieldContainer[str]
    explanations: _containers.RepeatedCompositeFieldContainer[Explanation]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., stream: _Optional[str] = ..., model_version: _Optional[str] = ..., log_prob: _Optional[_Iterable[float]] = ..., p_value: _Optional[_Iterable[float]] = ..., level: _Optional[_Iterable[str]] = ..., explanations: _Optional[_Iterable[_Union[Explanation, _Mapping]]] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams",)
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[StreamInfo]
    def __init__(self, streams: _Optional[_Iterable[_Union[StreamInfo, _Mapping]]] = ...) -> None: ...

class GetStreamRequest(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: str
    def __init__(self, stream: _Optional[str] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "raw_type", "kind", "vocabulary")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAW_TYPE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    name: str
    raw_type: str
    kind: str
    vocabulary: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., raw_type: _Optional[str] = ..., kind: _Optional[str] = ..., vocabulary: _Optional[_Iterable[str]] = ...) -> None: ...

class Level(_message.Message):
    __slots__ = ("name", "target_fpr", "threshold")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FPR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    target_fpr: float
    threshold: float
    def __init__(self, name: _Optional[str] = ..., target_fpr: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...

class TrainingMetrics(_message.Message):
    __slots__ = ("train_nll", "val_nll", "n_train", "n_val", "epochs", "duration_s", "data_fingerprint", "source")
    TRAIN_NLL_FIELD_NUMBER: _ClassVar[int]
    VAL_NLL_FIELD_NUMBER: _ClassVar[int]
    N_TRAIN_FIELD_NUMBER: _ClassVar[int]
    N_VAL_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    DATA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    train_nll: float
    val_nll: float
    n_train: int
    n_val: int
    epochs: int
    duration_s: float
    data_fingerprint: str
    source: str
    def __init__(self, train_nll: _Optional[float] = ..., val_nll: _Optional[float] = ..., n_train: _Optional[int] = ..., n_val: _Optional[int] = ..., epochs: _Optional[int] = ..., duration_s: _Optional[float] = ..., data_fingerprint: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("name", "state", "state_detail", "model_version", "parent_version", "created_at", "features", "levels", "calibrated_at", "n_calibration_scores", "training", "package_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_AT_FIELD_NUMBER: _ClassVar[int]
    N_CALIBRATION_SCORES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: StreamState
    state_detail: str
    model_version: str
    parent_version: str
    created_at: _timestamp_pb2.Timestamp
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    levels: _containers.RepeatedCompositeFieldContainer[Level]
    calibrated_at: _timestamp_pb2.Timestamp
    n_calibration_scores: int
    training: TrainingMetrics
    package_version: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[StreamState, str]] = ..., state_detail: _Optional[str] = ..., model_version: _Optional[str] = ..., parent_version: _Optional[str] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., levels: _Optional[_Iterable[_Union[Level, _Mapping]]] = ..., calibrated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., n_calibration_scores: _Optional[int] = ..., training: _Optional[_Union[TrainingMetrics, _Mapping]] = ..., package_version: _Optional[str] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("stream", "n", "seed")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    stream: str
    n: int
    seed: int
    def __init__(self, stream: _Optional[str] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class SampleResponse(_message.Message):
    __slots__ = ("stream", "model_version", "points", "seed")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    stream: str
    model_version: str
    points: Points
    seed: int
    def __init__(self, stream: _Optional[str] = ..., model_version: _Optional[str] = ..., points: _Optional[_Union[Points, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("streams", "points", "priors")
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    PRIORS_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedScalarFieldContainer[str]
    points: Points
    priors: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, streams: _Optional[_Iterable[str]] = ..., points: _Optional[_Union[Points, _Mapping]] = ..., priors: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("streams", "model_versions", "posterior", "log_prob", "best")
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_FIELD_NUMBER: _ClassVar[int]
    LOG_PROB_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedScalarFieldContainer[str]
    model_versions: _containers.RepeatedScalarFieldContainer[str]
    posterior: _containers.RepeatedScalarFieldContainer[float]
    log_prob: _containers.RepeatedScalarFieldContainer[float]
    best: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, streams: _Optional[_Iterable[str]] = ..., model_versions: _Optional[_Iterable[str]] = ..., posterior: _Optional[_Iterable[float]] = ..., log_prob: _Optional[_Iterable[float]] = ..., best: _Optional[_Iterable[str]] = ...) -> None: ...
