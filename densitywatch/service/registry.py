"""The model registry: which version of each stream is serving, and hot swaps.

At start every stream's newest calibrated version is loaded (or its pinned version);
a poller then looks for newer calibrated versions and swaps each in by replacing one
immutable mapping, so a request sees either the old or the new model, never a mix, and
in-flight batches keep their reference to the old one. A version that fails to load is
logged, counted and remembered with the state of its files (mode, size, times), and never
replaces the serving one; it is tried again only once its files change (permissions fixed,
a copy finished), so a broken version costs one attempt, not one per poll.

What callers read of a failure (`StreamStatus.detail`, FAILED_PRECONDITION) names the
version and the error with file names only: the store's paths stay in the log and in
`bad_versions()`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.density.artifact import (
    MANIFEST,
    WEIGHTS,
    Artifact,
    ArtifactError,
    ArtifactStore,
    load_artifact,
    read_manifest,
)
from densitywatch.density.calibration import Calibration
from densitywatch.errors import NotCalibratedError, StreamNotFoundError, UnavailableError
from densitywatch.service.errors import echoed
from densitywatch.service.metrics import ServiceMetrics
from densitywatch.service.scorer import StreamModel

log = logging.getLogger(__name__)

# An absolute path in an error message: from a slash at the start or after a space or quote,
# up to the next space, quote or colon.
_ABSOLUTE_PATH = re.compile(r"""(?:(?<=^)|(?<=[\s'"(]))(?:[A-Za-z]:)?[/\\][^\s'":]*""")


def without_paths(text: str, root: Path | None = None) -> str:
    """`text` with every absolute path cut to its last component (a file or folder name);
    paths under `root` first, whole, since they may hold spaces."""
    if root is not None:
        for prefix in sorted({str(root), str(root.absolute()), str(root.resolve())}, key=len)[::-1]:
            start = r"""(?:(?<=^)|(?<=[\s'"(]))"""
            text = re.sub(start + re.escape(prefix) + r"(?=[/\\])", "", text)
    return _ABSOLUTE_PATH.sub(lambda m: re.split(r"[/\\]", m.group().rstrip("/\\"))[-1], text)


@dataclass(frozen=True)
class StreamStatus:
    """A stream's serving state; `model` is None unless it is serving."""

    name: str
    state: int  # pb.StreamState
    detail: str = ""
    model: StreamModel | None = None


class Registry:
    """Loads, serves and hot-swaps stream models from an ArtifactStore."""

    def __init__(
        self,
        store: ArtifactStore,
        metrics: ServiceMetrics,
        pinned: dict[str, str] | None = None,
        on_change: Callable[[dict[str, StreamStatus]], None] | None = None,
        trace: bool = True,
    ) -> None:
        self.store = store
        self.trace = trace
        self.metrics = metrics
        self.pinned = dict(pinned or {})
        self._on_change = on_change
        self._streams: dict[str, StreamStatus] = {}
        self._calibrated: dict[tuple[str, str], bool] = {}
        self._bad: dict[tuple[str, str], str] = {}
        self._bad_files: dict[tuple[str, str], FilesState] = {}
        self._write = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.ready = False
        self.draining = False

    # -- reading (lock-free: one reference read) --------------------------------------------
    def check_ready(self) -> None:
        if not self.ready:
            raise UnavailableError("models are still loading: retry shortly")

    def get(self, stream: str) -> StreamModel:
        """The serving model of a stream, or the error that explains why there is none."""
        if self.draining:
            raise UnavailableError("the server is shutting down: retry on another replica")
        self.check_ready()
        status = self._streams.get(stream)
        if status is None:
            # Not the list of streams: a caller would learn every tenant's stream names.
            raise StreamNotFoundError(f"unknown stream {echoed(stream)}")
        if status.model is None:
            raise NotCalibratedError(f"stream {echoed(stream)} cannot be scored: {status.detail}")
        return status.model

    def statuses(self) -> list[StreamStatus]:
        return [self._streams[name] for name in sorted(self._streams)]

    def status(self, stream: str) -> StreamStatus:
        self.check_ready()
        status = self._streams.get(stream)
        if status is None:
            raise StreamNotFoundError(f"unknown stream {echoed(stream)}")
        return status

    def bad_versions(self) -> dict[tuple[str, str], str]:
        return dict(self._bad)

    # -- loading ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Load anything newer than what is serving (all streams); swap atomically."""
        with self._write:
            current = self._streams
            updated = dict(current)
            for stream in self.store.streams():
                status = self._refresh_stream(stream, current.get(stream))
                if status is not None:
                    updated[stream] = status
            if updated != current:
                self._streams = updated
                if self._on_change is not None:
                    self._on_change(updated)
            self.ready = True

    def _refresh_stream(self, stream: str, current: StreamStatus | None) -> StreamStatus | None:
        serving = current.model.version if current and current.model else None
        pinned = self.pinned.get(stream)
        candidates = [pinned] if pinned else list(reversed(self.store.versions(stream)))
        failures: list[str] = []
        for version in candidates:
            if version == serving:
                return None
            if (stream, version) in self._bad and self._changed(stream, version):
                self._forget(stream, version)
            if (stream, version) in self._bad:
                shown = without_paths(self._bad[(stream, version)], self.store.root)
                failures.append(f"{version}: {shown}")
                continue
            if not self._is_calibrated(stream, version, failures):
                continue
            model = self._load(stream, version, failures)
            if model is not None:
                log.info("serving %s version %s (was %s)", stream, version, serving or "none")
                return StreamStatus(stream, pb.STREAM_STATE_SERVING, model=model)
        if current is not None and current.model is not None:
            return None  # keep serving what works
        return self._unservable(stream, pinned, failures)

    def _unservable(self, stream: str, pinned: str | None, failures: list[str]) -> StreamStatus:
        if pinned and pinned not in self.store.versions(stream):
            detail = f"pinned version {pinned} does not exist"
            return StreamStatus(stream, pb.STREAM_STATE_FAILED, detail)
        if failures:
            detail = "no version could be loaded: " + "; ".join(failures)
            return StreamStatus(stream, pb.STREAM_STATE_FAILED, detail)
        which = f"version {pinned} is" if pinned else "no version is"
        detail = f"{which} calibrated: run `densitywatch calibrate` for this stream"
        return StreamStatus(stream, pb.STREAM_STATE_UNCALIBRATED, detail)

    def _is_calibrated(self, stream: str, version: str, failures: list[str]) -> bool:
        key = (stream, version)
        if key not in self._calibrated:
            try:
                manifest = read_manifest(self.store.path(stream, version))
            except ArtifactError as e:
                self._mark_bad(stream, version, e, failures)
                return False
            self._calibrated[key] = manifest.calibration is not None
        return self._calibrated[key]

    def _load(self, stream: str, version: str, failures: list[str]) -> StreamModel | None:
        try:
            artifact = load_artifact(self.store.path(stream, version))
            metrics = self.metrics.bind(stream, version, _calibration(artifact))
            return StreamModel(artifact, metrics, trace=self.trace)
        except Exception as e:  # any failure: keep serving what we have
            self._mark_bad(stream, version, e, failures)
            return None

    def _mark_bad(self, stream: str, version: str, error: Exception, failures: list[str]) -> None:
        log.error(
            "stream %s version %s failed to load (tried again once its files change): %s",
            stream,
            version,
            error,
        )
        self._bad[(stream, version)] = str(error)
        self._bad_files[(stream, version)] = files_state(self.store.path(stream, version))
        failures.append(f"{version}: {without_paths(str(error), self.store.root)}")
        self.metrics.load_failed(stream)

    def _changed(self, stream: str, version: str) -> bool:
        state = files_state(self.store.path(stream, version))
        return state != self._bad_files.get((stream, version))

    def _forget(self, stream: str, version: str) -> None:
        log.info("stream %s version %s changed on disk: loading it again", stream, version)
        key = (stream, version)
        self._bad.pop(key, None)
        self._bad_files.pop(key, None)
        self._calibrated.pop(key, None)

    # -- polling ----------------------------------------------------------------------------
    def start_polling(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                except Exception:
                    log.exception("polling the model store failed")

        self._poller = threading.Thread(target=loop, name="registry-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)


FilesState = tuple[tuple[int, int, int, int] | None, ...]


def files_state(folder: Path) -> FilesState:
    """(mode, size, mtime, ctime) of a version folder and its two files; None where absent.
    ctime moves on chmod and chown too, which fix a file without changing its content."""
    states: list[tuple[int, int, int, int] | None] = []
    for path in (folder, folder / MANIFEST, folder / WEIGHTS):
        try:
            st = path.stat()
        except OSError:
            states.append(None)
            continue
        states.append((st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(states)


def _calibration(artifact: Artifact) -> Calibration:
    calibration = artifact.manifest.calibration
    if calibration is None:
        raise ArtifactError("artifact has no calibration")
    return calibration
