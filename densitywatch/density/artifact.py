"""The artifact: the one contract between training and the service.

Layout: `<store>/<stream>/<version>/manifest.json` + `weights.safetensors`. Versions are
zero-padded integers ("000001"), newest = largest. A version is written into a temporary
folder beside its final place and renamed into place, so readers never see half of one; it
is never edited afterwards (calibration writes a new version). Loading verifies the
weights' SHA-256 and the manifest's own checksum, and uses safetensors, which holds only
tensors and cannot execute code.

The weights file holds each masked layer's weights packed: only the entries its MADE mask
keeps (about half), in row-major order under `<layer>.weight.packed`, as the masks follow
from the stored orderings. Parameters that float16 represents exactly (a trained model is
rounded to it, `DensityModel.round_to_half_`) are stored as float16. Both are lossless: a
loaded model computes the same log p as the one written. Files with dense float32 weights
load as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from densitywatch.density.calibration import Calibration
from densitywatch.density.model import (
    ArchitectureSpec,
    DensityModel,
    check_orderings,
    connection_counts,
    min_weights,
)
from densitywatch.density.schema import Schema
from densitywatch.errors import (
    ArtifactCorruptError,
    ArtifactError,
    ArtifactNotFoundError,
    ArtifactUnreadableError,
    ArtifactWriteError,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
PACKED = ".packed"  # suffix of a masked layer's weights stored at its mask's ones
_VERSION_WIDTH = 6
# ASCII digits only: str.isdigit() also accepts "²" and other digits int() cannot parse.
_VERSION_NAME = re.compile(rf"[0-9]{{{_VERSION_WIDTH}}}")
_MAX_U32 = 2**32 - 1
_MAX_U63 = 2**63 - 1


_STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def is_stream_name(name: str) -> bool:
    """Whether `name` can name a stream (and its store folder): 1-128 ASCII letters, digits,
    '_', '.', '-', starting with a letter or digit.

    Example:
        >>> is_stream_name("web-01.eu"), is_stream_name(".tmp-1f"), is_stream_name("../beta")
        (True, False, False)
    """
    return _STREAM_NAME.fullmatch(name) is not None


def is_version(name: str) -> bool:
    """Whether `name` is a version folder's name: six ASCII digits.

    Example:
        >>> is_version("000012"), is_version("12"), is_version("00001²"), is_version("0000001")
        (True, False, False, False)
    """
    return _VERSION_NAME.fullmatch(name) is not None


class TrainingInfo(BaseModel):
    """How the model was fitted, and on what.

    Example:
        >>> info = TrainingInfo(train_nll=1.4, val_nll=1.5, n_train=80, n_val=20, epochs=3,
        ...                     duration_s=0.2, seed=0, data_fingerprint="")
        >>> info.device, info.refit_epochs is None  # no refit: the selected candidate is the model
        ('cpu', True)
    """

    train_nll: float = Field(
        description="Mean negative log-likelihood (nats/point) on the rows the final model was "
        "fitted on (training split, plus the validation split after a refit)."
    )
    val_nll: float = Field(
        description="Mean negative log-likelihood (nats/point) of the selected candidate on "
        "the validation split, which it never trained on (measured before any refit)."
    )
    # Bounded as the API's integer fields are (GetStream answers with them).
    n_train: int = Field(ge=0, le=_MAX_U63)
    n_val: int = Field(ge=0, le=_MAX_U63)
    n_dropped_missing: int = Field(default=0, ge=0, le=_MAX_U63)
    epochs: int = Field(ge=0, le=_MAX_U32)
    duration_s: float = Field(ge=0, allow_inf_nan=False)
    seed: int = Field(ge=0, le=_MAX_U63)
    device: str = "cpu"
    data_fingerprint: str
    source: str = ""
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    candidates: list[dict[str, Any]] = Field(
        default_factory=list, description="Capacity candidates tried and their validation NLL."
    )
    refit_epochs: int | None = Field(
        default=None,
        ge=0,
        le=_MAX_U32,
        description="Epochs of the final retraining of the selected capacity on training + "
        "validation splits; None: the selected candidate itself is the model.",
    )


class Manifest(BaseModel):
    """Everything about an artifact except its weights.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name="a")])
        >>> arch = ArchitectureSpec(hidden_width=4)
        >>> info = TrainingInfo(train_nll=1.4, val_nll=1.5, n_train=80, n_val=20, epochs=3,
        ...                     duration_s=0.2, seed=0, data_fingerprint="")
        >>> manifest = Manifest(stream="web", feature_schema=schema, architecture=arch,
        ...                     training=info)
        >>> manifest.format_version, manifest.version, manifest.calibration is None
        (1, '', True)
    """

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
        """SHA-256 of the manifest's canonical JSON, without `manifest_sha256` itself.

        Example:
            >>> from densitywatch.density.schema import FeatureSpec
            >>> schema = Schema(features=[FeatureSpec(name="a")])
            >>> arch = ArchitectureSpec(hidden_width=4)
            >>> info = TrainingInfo(train_nll=1.4, val_nll=1.5, n_train=80, n_val=20, epochs=3,
            ...                     duration_s=0.2, seed=0, data_fingerprint="")
            >>> manifest = Manifest(stream="web", feature_schema=schema, architecture=arch,
            ...                     training=info)
            >>> digest = manifest.content_digest()
            >>> digest == manifest.model_copy(update={"manifest_sha256": digest}).content_digest()
            True
            >>> digest == manifest.model_copy(update={"stream": "api"}).content_digest()
            False
        """
        return _digest(self.model_dump(mode="json"))


def _digest(body: dict[str, Any]) -> str:
    """SHA-256 of a manifest's JSON object without `manifest_sha256`, keys sorted.

    Reading checks the digest of the object as stored, not of the parsed model dumped
    again: a field added to the manifest since it was written (with its default) must not
    make an intact artifact look edited."""
    body = {key: value for key, value in body.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Artifact:
    """A loaded artifact: its manifest and the model, ready for inference or calibration.

    Example:
        >>> import torch
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name="a")])
        >>> arch = ArchitectureSpec(hidden_width=4)
        >>> info = TrainingInfo(train_nll=1.4, val_nll=1.5, n_train=80, n_val=20, epochs=3,
        ...                     duration_s=0.2, seed=0, data_fingerprint="")
        >>> manifest = Manifest(stream="web", feature_schema=schema, architecture=arch,
        ...                     training=info)
        >>> _ = torch.manual_seed(0)
        >>> model = DensityModel(schema, arch)
        >>> artifact = Artifact(manifest.model_copy(update={"version": "000001"}), model,
        ...                     Path("store/web/000001"))
        >>> artifact.stream, artifact.version
        ('web', '000001')
    """

    def __init__(self, manifest: Manifest, model: DensityModel, path: Path) -> None:
        self.manifest = manifest
        self.model = model
        self.path = path

    @property
    def stream(self) -> str:
        """The stream the model describes."""
        return self.manifest.stream

    @property
    def version(self) -> str:
        """The artifact's version ("000001", ...)."""
        return self.manifest.version


def package_version() -> str:
    """The installed densitywatch distribution's version; "0+unknown" when not installed.

    Example:
        >>> version = package_version()
        >>> version == "0+unknown" or version == metadata.version("densitywatch")
        True
    """
    try:
        return metadata.version("densitywatch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def fingerprint(array: np.ndarray) -> str:
    """Stable SHA-256 of an array's shape, dtype and bytes (data provenance).

    Example:
        >>> a = np.arange(4.0)
        >>> fingerprint(a) == fingerprint(a.copy()), len(fingerprint(a))
        (True, 64)
        >>> fingerprint(a) == fingerprint(a.astype(np.float32))  # same values, other dtype
        False
    """
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


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """A folder of streams, each a folder of immutable versions.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name="a")])
        >>> arch = ArchitectureSpec(hidden_width=4)
        >>> info = TrainingInfo(train_nll=1.4, val_nll=1.5, n_train=80, n_val=20, epochs=3,
        ...                     duration_s=0.2, seed=0, data_fingerprint="")
        >>> manifest = Manifest(stream="web", feature_schema=schema, architecture=arch,
        ...                     training=info)
        >>> _ = torch.manual_seed(0)
        >>> model = DensityModel(schema, arch)
        >>> with tempfile.TemporaryDirectory() as root:
        ...     store = ArtifactStore(root)
        ...     first, second = store.write(model, manifest), store.write(model, manifest)
        ...     loaded = store.load("web")  # the latest version
        ...     print(store.streams(), store.versions("web"), loaded.version)
        ['web'] ['000001', '000002'] 000002
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def streams(self) -> list[str]:
        """Streams with at least one complete version, sorted by name.

        Example:
            >>> ArtifactStore("/nonexistent/store").streams()
            []
        """
        if not self.root.is_dir():
            return []
        names = (p.name for p in self.root.iterdir() if p.is_dir() and is_stream_name(p.name))
        return sorted(name for name in names if self.versions(name))

    def versions(self, stream: str) -> list[str]:
        """Complete versions of a stream, oldest first (temporary folders excluded).

        Example:
            >>> ArtifactStore("/nonexistent/store").versions("web")
            []
        """
        folder = self.root / stream
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_version(p.name))

    def latest(self, stream: str) -> str:
        """The newest version of a stream; ArtifactNotFoundError when it has none.

        Example:
            >>> ArtifactStore("/nonexistent/store").latest("web")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
                ...
            densitywatch.errors.ArtifactNotFoundError: no artifact for stream 'web' under ...
        """
        versions = self.versions(stream)
        if not versions:
            raise ArtifactNotFoundError(f"no artifact for stream {stream!r} under {self.root}")
        return versions[-1]

    def path(self, stream: str, version: str) -> Path:
        """The folder of one version (whether or not it exists).

        Example:
            >>> ArtifactStore("/models").path("web", "000001").as_posix()
            '/models/web/000001'
        """
        return self.root / stream / version

    def write(self, model: DensityModel, manifest: Manifest) -> Artifact:
        """Write a new version atomically; returns it with its version and checksums set.

        Raises ArtifactWriteError when the files cannot be written (disk full, permissions):
        nothing of the version is left behind."""
        stream_dir = self.root / manifest.stream
        tmp = stream_dir / f".tmp-{uuid.uuid4().hex}"
        try:
            stream_dir.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            save_file(stored_state(model), str(tmp / WEIGHTS))
            _fsync_file(tmp / WEIGHTS)  # on disk before the rename makes the version visible
            manifest = manifest.model_copy(update={"weights_sha256": _sha256_file(tmp / WEIGHTS)})
            return self._rename_into_place(tmp, stream_dir, manifest, model)
        except (OSError, SafetensorError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ArtifactWriteError(
                f"cannot write a version of stream {manifest.stream!r} under {self.root}: {e}"
            ) from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _rename_into_place(
        self, tmp: Path, stream_dir: Path, manifest: Manifest, model: DensityModel
    ) -> Artifact:
        for _ in range(100):
            existing = self.versions(manifest.stream)
            number = int(existing[-1]) + 1 if existing else 1
            if number >= 10**_VERSION_WIDTH:
                raise ArtifactWriteError(f"stream {manifest.stream!r} has no version left")
            version = f"{number:0{_VERSION_WIDTH}d}"
            manifest = manifest.model_copy(update={"version": version})
            manifest = manifest.model_copy(update={"manifest_sha256": manifest.content_digest()})
            with (tmp / MANIFEST).open("w") as f:
                f.write(manifest.model_dump_json(indent=2))
                f.flush()
                os.fsync(f.fileno())
            # safetensors creates its file 0600 whatever the umask; a server running as
            # another user (a container's uid) reads the weights as it reads the manifest.
            os.chmod(tmp / WEIGHTS, stat.S_IMODE(os.stat(tmp / MANIFEST).st_mode))
            try:
                os.rename(tmp, stream_dir / version)  # fails if another writer took it
            except OSError:
                continue
            _fsync_dir(stream_dir)
            return Artifact(manifest, model, stream_dir / version)
        raise ArtifactError(f"could not allocate a version for {manifest.stream!r}")

    def load(self, stream: str, version: str | None = None) -> Artifact:
        """Load and verify one version of a stream (the latest when `version` is None).

        Example:
            >>> ArtifactStore("/nonexistent/store").load("web", "000001")
            Traceback (most recent call last):
                ...
            densitywatch.errors.ArtifactNotFoundError: no version '000001' of stream 'web'
        """
        version = version or self.latest(stream)
        path = self.path(stream, version)
        if not path.is_dir():
            raise ArtifactNotFoundError(f"no version {version!r} of stream {stream!r}")
        return load_artifact(path)


def read_manifest(path: Path) -> Manifest:
    """Parse and verify a manifest (checksum of its own content).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +ELLIPSIS
        ...     read_manifest(Path(folder))
        Traceback (most recent call last):
            ...
        densitywatch.errors.ArtifactCorruptError: ...: no manifest.json
    """
    try:
        text = (path / MANIFEST).read_bytes()
        manifest = Manifest.model_validate_json(text)
        stored = json.loads(text)
    except FileNotFoundError as e:
        raise ArtifactCorruptError(f"{path}: no {MANIFEST}") from e
    except OSError as e:
        raise ArtifactUnreadableError(f"cannot read {path}/{MANIFEST}: {e.strerror}") from e
    except ValidationError as e:
        raise ArtifactCorruptError(f"{path}/{MANIFEST} is not a valid manifest: {e}") from e
    _check_place(path, manifest)
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactCorruptError(
            f"{path}: format version {manifest.format_version}, this build reads {FORMAT_VERSION}"
        )
    if manifest.manifest_sha256 != _digest(stored):
        raise ArtifactCorruptError(f"{path}/{MANIFEST} was edited: its checksum does not match")
    return manifest


def _check_place(path: Path, manifest: Manifest) -> None:
    """A manifest describes the folder it sits in: `<stream>/<version>`. A copied stream or
    version folder (`cp -r alpha alpha2`) would otherwise serve, and be calibrated, as the
    stream and version its manifest names."""
    place = (path.parent.name, path.name)
    if (manifest.stream, manifest.version) != place:
        # The manifest's own stream is not named: it may be another tenant's.
        raise ArtifactCorruptError(
            f"{path}: the manifest describes another stream or version than the folder "
            "it sits in (a copied folder?)"
        )


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Load and verify an artifact folder; raises ArtifactCorruptError on any mismatch.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name="a")])
        >>> arch = ArchitectureSpec(hidden_width=4)
        >>> info = TrainingInfo(train_nll=1.4, val_nll=1.5, n_train=80, n_val=20, epochs=3,
        ...                     duration_s=0.2, seed=0, data_fingerprint="")
        >>> manifest = Manifest(stream="web", feature_schema=schema, architecture=arch,
        ...                     training=info)
        >>> _ = torch.manual_seed(0)
        >>> model = DensityModel(schema, arch)
        >>> with tempfile.TemporaryDirectory() as root:
        ...     written = ArtifactStore(root).write(model, manifest)
        ...     print(load_artifact(written.path).version)
        ...     with (written.path / WEIGHTS).open("r+b") as f:
        ...         _ = f.truncate(16)
        ...     try:
        ...         load_artifact(written.path)
        ...     except ArtifactCorruptError as e:
        ...         print(str(e).endswith("is truncated or edited: checksum mismatch"))
        000001
        True
    """
    path = Path(path)
    manifest = read_manifest(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ArtifactCorruptError(f"{path}: no {WEIGHTS}")
    try:
        digest = _sha256_file(weights)
    except OSError as e:
        raise ArtifactUnreadableError(f"cannot read {weights}: {e.strerror}") from e
    if digest != manifest.weights_sha256:
        raise ArtifactCorruptError(f"{weights} is truncated or edited: checksum mismatch")
    try:
        state = load_file(str(weights))  # allocates no more than the file holds
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactCorruptError(f"{weights} is not a safetensors file: {e}") from e
    _check_size(weights, manifest, state)
    try:
        model = DensityModel(
            manifest.feature_schema, manifest.architecture, orderings=state["orderings"]
        )
        model.load_state_dict(_without_masks(model, _unpacked(model, state)), strict=True)
    except (KeyError, RuntimeError, ValueError, IndexError) as e:
        raise ArtifactCorruptError(f"{weights} does not match its manifest: {e}") from e
    model.eval()
    return Artifact(manifest, model, path)


def stored_state(model: DensityModel) -> dict[str, torch.Tensor]:
    """The tensors a weights file holds for `model`: masked layers' weights packed (one copy
    per member; shared weights stay dense), float32 parameters that float16 represents
    exactly as float16.

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> _ = torch.manual_seed(0)
        >>> schema = Schema(features=[FeatureSpec(name=c) for c in "abc"])
        >>> model = DensityModel(schema, ArchitectureSpec(hidden_width=8)).round_to_half_()
        >>> state = stored_state(model)
        >>> state["net.layers.1.weight.packed"].shape, state["net.layers.1.weight.packed"].dtype
        (torch.Size([48]), torch.float16)
        >>> int(model.net.masked_layers()[1].mask.sum())  # of 8 x 8
        48
    """
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    parameters = {name for name, _ in model.named_parameters()}
    if not model.architecture.shared_weights:  # one copy per member, each masked
        for i, layer in enumerate(model.net.masked_layers()):
            name = f"net.layers.{i}.weight"
            state[name + PACKED] = state.pop(name)[layer.mask.bool()]
            parameters.add(name + PACKED)
    return {k: _half_if_exact(v) if k in parameters else v for k, v in state.items()}


def _half_if_exact(tensor: torch.Tensor) -> torch.Tensor:
    half = tensor.half()
    return half if tensor.dtype == torch.float32 and torch.equal(half.float(), tensor) else tensor


def _unpacked(model: DensityModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with packed weights scattered back to their masks' ones (zeros elsewhere);
    `_check_packed` has checked their lengths against the masks before the model was built."""
    state = dict(state)
    for i, layer in enumerate(model.net.masked_layers()):
        name = f"net.layers.{i}.weight"
        packed = state.pop(name + PACKED, None)
        if packed is None:
            continue
        keep = layer.mask.bool()
        weight = torch.zeros(keep.shape, dtype=torch.float32)
        weight[keep] = packed.to(torch.float32)
        state[name] = weight
    return state


def _check_size(weights: Path, manifest: Manifest, state: dict[str, torch.Tensor]) -> None:
    """Refuse, before building it, an architecture larger than the stored weights: building
    allocates what the manifest declares, and only then could the weights refuse it.

    Packed layers must hold exactly the weights their masks keep (counted from the stored
    orderings without building anything); dense files must hold at least `min_weights`."""
    orderings = state.get("orderings")
    if orderings is None or orderings.dim() != 2:
        raise ArtifactCorruptError(f"{weights} does not match its manifest: no orderings")
    schema, architecture = manifest.feature_schema, manifest.architecture
    packed = {k: v for k, v in state.items() if k.endswith(PACKED)}
    if packed:
        _check_packed(weights, schema, architecture, orderings, packed)
        return
    stored = sum(tensor.numel() for tensor in state.values())
    needed = min_weights(len(schema.features), architecture, int(orderings.shape[0]))
    if needed > stored:
        raise ArtifactCorruptError(
            f"{weights} does not match its manifest: the architecture needs at least "
            f"{needed} weights, the file holds {stored}"
        )


def _check_packed(
    weights: Path,
    schema: Schema,
    architecture: ArchitectureSpec,
    orderings: torch.Tensor,
    packed: dict[str, torch.Tensor],
) -> None:
    try:
        check_orderings(orderings, len(schema.features))
    except ValueError as e:
        raise ArtifactCorruptError(f"{weights} does not match its manifest: {e}") from e
    counts = connection_counts(schema, architecture, orderings.long())
    expected = {f"net.layers.{i}.weight{PACKED}": n for i, n in enumerate(counts)}
    if architecture.shared_weights or set(packed) != set(expected):
        raise ArtifactCorruptError(
            f"{weights} does not match its manifest: packed layers {sorted(packed)}, "
            f"the architecture has {sorted(expected)}"
        )
    for name, tensor in packed.items():
        if tensor.dim() != 1 or tensor.numel() != expected[name]:
            raise ArtifactCorruptError(
                f"{weights} does not match its manifest: {name} holds "
                f"{tuple(tensor.shape)} weights, the architecture's masks keep "
                f"{expected[name]} (one row)"
            )


def _without_masks(model: DensityModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` less the MADE masks that artifacts written before masks were derived carry.

    A stored mask must equal the one the stored orderings give: a mask that differs would
    mean the weights were trained under another connectivity."""
    derived = {name: buffer for name, buffer in model.named_buffers() if name.endswith(".mask")}
    for name in set(state) & set(derived):
        if not torch.equal(state[name].to(derived[name].dtype), derived[name]):
            raise ValueError(f"stored mask {name} does not follow from the orderings")
    return {name: value for name, value in state.items() if name not in derived}


def with_calibration(artifact: Artifact, calibration: Calibration) -> Manifest:
    """The manifest of a new version that carries `calibration` (weights unchanged).

    Example:
        >>> import tempfile
        >>> import torch
        >>> from densitywatch.density.calibration import calibrate
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name="a")])
        >>> arch = ArchitectureSpec(hidden_width=4)
        >>> info = TrainingInfo(train_nll=1.4, val_nll=1.5, n_train=80, n_val=20, epochs=3,
        ...                     duration_s=0.2, seed=0, data_fingerprint="")
        >>> manifest = Manifest(stream="web", feature_schema=schema, architecture=arch,
        ...                     training=info)
        >>> _ = torch.manual_seed(0)
        >>> model = DensityModel(schema, arch)
        >>> with tempfile.TemporaryDirectory() as root:
        ...     store = ArtifactStore(root)
        ...     trained = store.write(model, manifest)
        ...     calibration = calibrate(-np.arange(1.0, 201.0), {"warning": 0.01})
        ...     calibrated = store.write(model, with_calibration(trained, calibration))
        >>> calibrated.version, calibrated.manifest.parent_version
        ('000002', '000001')
        >>> calibrated.manifest.weights_sha256 == trained.manifest.weights_sha256
        True
    """
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
