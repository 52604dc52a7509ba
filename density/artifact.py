"""The artifact: the one contract between training and the service.

Layout: `<store>/<stream>/<version>/manifest.json` + `weights.safetensors`. Versions are
zero-padded integers ("000001"), newest = largest. A version is written into a temporary
folder beside its final place and renamed into place, so readers never see half of one; it
is never edited afterwards (calibration writes a new version). Loading verifies the
weights' SHA-256 and the manifest's own checksum, and uses safetensors, which holds only
tensors and cannot execute code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from density.calibration import Calibration
from density.model import ArchitectureSpec, DensityModel
from density.schema import Schema

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
_VERSION_WIDTH = 6


class ArtifactError(Exception):
    """Base class of artifact problems."""


class ArtifactNotFoundError(ArtifactError):
    """No such stream or version in the store."""


class ArtifactCorruptError(ArtifactError):
    """An artifact is truncated, edited, or not an artifact at all."""


class TrainingInfo(BaseModel):
    """How the model was fitted, and on what."""

    train_nll: float = Field(
        description="Mean negative log-likelihood (nats/point) on the rows the final model was "
        "fitted on (training split, plus the validation split after a refit)."
    )
    val_nll: float = Field(
        description="Mean negative log-likelihood (nats/point) of the selected candidate on "
        "the validation split, which it never trained on (measured before any refit)."
    )
    n_train: int
    n_val: int
    n_dropped_missing: int = 0
    epochs: int
    duration_s: float
    seed: int
    device: str = "cpu"
    data_fingerprint: str
    source: str = ""
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    candidates: list[dict[str, Any]] = Field(
        default_factory=list, description="Capacity candidates tried and their validation NLL."
    )
    refit_epochs: int | None = Field(
        default=None,
        description="Epochs of the final retraining of the selected capacity on training + "
        "validation splits; None: the selected candidate itself is the model.",
    )


class Manifest(BaseModel):
    """Everything about an artifact except its weights."""

    format_version: int = FORMAT_VERSION
    stream: str
    version: str = ""
    parent_version: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    package_version: str = Field(default_factory=lambda: package_version())
    feature_schema: Schema
    architecture: ArchitectureSpec
    training: TrainingInfo
    calibration: Calibration | None = None
    weights_sha256: str = ""
    manifest_sha256: str = ""

    def content_digest(self) -> str:
        """SHA-256 of the manifest's canonical JSON, without `manifest_sha256` itself."""
        body = self.model_dump(mode="json", exclude={"manifest_sha256"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Artifact:
    """A loaded artifact: its manifest and the model, ready for inference or calibration."""

    def __init__(self, manifest: Manifest, model: DensityModel, path: Path) -> None:
        self.manifest = manifest
        self.model = model
        self.path = path

    @property
    def stream(self) -> str:
        return self.manifest.stream

    @property
    def version(self) -> str:
        return self.manifest.version


def package_version() -> str:
    try:
        return metadata.version("densitywatch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def fingerprint(array: np.ndarray) -> str:
    """Stable SHA-256 of an array's shape, dtype and bytes (data provenance)."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """A folder of streams, each a folder of immutable versions."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def streams(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, stream: str) -> list[str]:
        """Complete versions of a stream, oldest first (temporary folders excluded)."""
        folder = self.root / stream
        if not folder.is_dir():
            return []
        names = [p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        return sorted(names, key=int)

    def latest(self, stream: str) -> str:
        versions = self.versions(stream)
        if not versions:
            raise ArtifactNotFoundError(f"no artifact for stream {stream!r} under {self.root}")
        return versions[-1]

    def path(self, stream: str, version: str) -> Path:
        return self.root / stream / version

    def write(self, model: DensityModel, manifest: Manifest) -> Artifact:
        """Write a new version atomically; returns it with its version and checksums set."""
        stream_dir = self.root / manifest.stream
        stream_dir.mkdir(parents=True, exist_ok=True)
        tmp = stream_dir / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS))
            manifest = manifest.model_copy(update={"weights_sha256": _sha256_file(tmp / WEIGHTS)})
            return self._rename_into_place(tmp, stream_dir, manifest, model)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _rename_into_place(
        self, tmp: Path, stream_dir: Path, manifest: Manifest, model: DensityModel
    ) -> Artifact:
        for _ in range(100):
            existing = self.versions(manifest.stream)
            version = f"{int(existing[-1]) + 1 if existing else 1:0{_VERSION_WIDTH}d}"
            manifest = manifest.model_copy(update={"version": version})
            manifest = manifest.model_copy(update={"manifest_sha256": manifest.content_digest()})
            with (tmp / MANIFEST).open("w") as f:
                f.write(manifest.model_dump_json(indent=2))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.rename(tmp, stream_dir / version)  # fails if another writer took it
            except OSError:
                continue
            _fsync_dir(stream_dir)
            return Artifact(manifest, model, stream_dir / version)
        raise ArtifactError(f"could not allocate a version for {manifest.stream!r}")

    def load(self, stream: str, version: str | None = None) -> Artifact:
        version = version or self.latest(stream)
        path = self.path(stream, version)
        if not path.is_dir():
            raise ArtifactNotFoundError(f"no version {version!r} of stream {stream!r}")
        return load_artifact(path)


def read_manifest(path: Path) -> Manifest:
    """Parse and verify a manifest (checksum of its own content)."""
    try:
        manifest = Manifest.model_validate_json((path / MANIFEST).read_bytes())
    except FileNotFoundError as e:
        raise ArtifactCorruptError(f"{path}: no {MANIFEST}") from e
    except ValidationError as e:
        raise ArtifactCorruptError(f"{path}/{MANIFEST} is not a valid manifest: {e}") from e
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactCorruptError(
            f"{path}: format version {manifest.format_version}, this build reads {FORMAT_VERSION}"
        )
    if manifest.manifest_sha256 != manifest.content_digest():
        raise ArtifactCorruptError(f"{path}/{MANIFEST} was edited: its checksum does not match")
    return manifest


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Load and verify an artifact folder; raises ArtifactCorruptError on any mismatch."""
    path = Path(path)
    manifest = read_manifest(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ArtifactCorruptError(f"{path}: no {WEIGHTS}")
    if _sha256_file(weights) != manifest.weights_sha256:
        raise ArtifactCorruptError(f"{weights} is truncated or edited: checksum mismatch")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactCorruptError(f"{weights} is not a safetensors file: {e}") from e
    try:
        model = DensityModel(
            manifest.feature_schema, manifest.architecture, orderings=state["orderings"]
        )
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError, IndexError) as e:
        raise ArtifactCorruptError(f"{weights} does not match its manifest: {e}") from e
    model.eval()
    return Artifact(manifest, model, path)


def with_calibration(artifact: Artifact, calibration: Calibration) -> Manifest:
    """The manifest of a new version that carries `calibration` (weights unchanged)."""
    return artifact.manifest.model_copy(
        update={
            "calibration": calibration,
            "parent_version": artifact.version,
            "created_at": datetime.now(UTC),
            "version": "",
            "weights_sha256": "",
            "manifest_sha256": "",
        }
    )
