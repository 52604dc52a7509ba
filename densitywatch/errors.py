"""Every error densitywatch raises on purpose, under one root, and what each means to a caller.

This module is the one table of meanings: each class names the gRPC status a server answers
with (by name, so this module imports nothing and the light client can use it) and the exit
code a command returns. The server turns the name into a `grpc.StatusCode` in
`densitywatch.service.errors`; the client maps a failed call back to its class with
`for_status`; the command line turns `exit_code` into the process status in
`densitywatch.cli`. Catch `DensityWatchError` to catch them all.

>>> issubclass(DataError, DensityWatchError), DataError.exit_code, UsageError.exit_code
(True, 1, 2)
>>> for_status("NOT_FOUND") is StreamNotFoundError
True
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AccessConfigError",
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactUnreadableError",
    "ArtifactWriteError",
    "CalibrationDataError",
    "CalibrationError",
    "ConfigError",
    "DataError",
    "DeadlineExceededError",
    "DensityWatchError",
    "EncodingError",
    "InternalError",
    "InvalidArgumentError",
    "NotCalibratedError",
    "ResourceExhaustedError",
    "SchemaError",
    "StartupError",
    "StreamNotFoundError",
    "UnavailableError",
    "UsageError",
    "for_status",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class DensityWatchError(Exception):
    """The root: `status` is the gRPC status name, `exit_code` the command's exit status."""

    status: ClassVar[str] = "INTERNAL"
    exit_code: ClassVar[int] = EXIT_FAILED
    #: On the client side, the `grpc.StatusCode` of the call that failed.
    code: Any = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # `message` may be extended after construction (e.g. prefixed with a request id).
        return self.message


# -- what a caller of the service sees --------------------------------------------------------
class InvalidArgumentError(DensityWatchError):
    """Bad input: wrong width, NaN/inf, wrong type. Names the point and feature when known."""

    status = "INVALID_ARGUMENT"

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
    """No stream of that name is served."""

    status = "NOT_FOUND"


class NotCalibratedError(DensityWatchError):
    """The stream exists but has no servable (calibrated, loadable) version."""

    status = "FAILED_PRECONDITION"


class ResourceExhaustedError(DensityWatchError):
    """Too many points in a call, or the scoring queue is full."""

    status = "RESOURCE_EXHAUSTED"


class DeadlineExceededError(DensityWatchError):
    """The call's deadline passed before it could be answered."""

    status = "DEADLINE_EXCEEDED"


class UnavailableError(DensityWatchError):
    """Models still loading, or the server is draining: retry elsewhere or later."""

    status = "UNAVAILABLE"


class InternalError(DensityWatchError):
    """A fault of the service, not of the call."""

    status = "INTERNAL"


# -- what a user of the command line or the library sees ---------------------------------------
class UsageError(DensityWatchError, ValueError):
    """Arguments or settings that cannot work: fix the command line (exit status 2)."""

    status = "INVALID_ARGUMENT"
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """The streams config (TOML) is missing, unreadable or invalid."""


class DataError(DensityWatchError, ValueError):
    """A records file cannot be read or its records cannot be used."""

    status = "INVALID_ARGUMENT"


class SchemaError(DataError):
    """The records do not support the schema asked for (types, vocabularies)."""


class CalibrationDataError(DataError):
    """Calibration records that do not fit the stream's model or labels."""


class EncodingError(InvalidArgumentError, ValueError):
    """A record does not fit the schema; `index` and `feature` say where."""

    def __init__(self, message: str, index: int | None = None, feature: str | None = None):
        super().__init__(message, index=index, feature=feature, reason="encoding")


class CalibrationError(DensityWatchError, ValueError):
    """Calibration cannot give the levels asked for (too few scores, bad FPR targets)."""


class StartupError(DensityWatchError):
    """The server cannot start: its port is taken, or its TLS or token files are unusable."""


class AccessConfigError(StartupError):
    """Unusable TLS or token settings (unreadable files, malformed hash lines)."""


class ArtifactError(DensityWatchError):
    """An artifact problem in the model store."""


class ArtifactNotFoundError(ArtifactError):
    """No such stream or version in the store."""

    status = "NOT_FOUND"


class ArtifactCorruptError(ArtifactError):
    """An artifact is truncated, edited, or not an artifact at all."""


class ArtifactUnreadableError(ArtifactError):
    """An artifact's files cannot be read (permissions, I/O): it may load once that is fixed."""


class ArtifactWriteError(ArtifactError):
    """A new version could not be written (disk full, permissions, I/O); nothing was kept."""


_BY_STATUS: dict[str, type[DensityWatchError]] = {
    cls.status: cls
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


def for_status(name: str) -> type[DensityWatchError]:
    """The class a client raises for a call that failed with gRPC status `name`."""
    return _BY_STATUS.get(name, DensityWatchError)
