"""The artifact store: exact round trip, versioning, immutability, and refusal of corrupt or
malicious files with ArtifactCorruptError (never executing anything)."""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from densitywatch.density.artifact import (
    MANIFEST,
    WEIGHTS,
    ArtifactCorruptError,
    ArtifactNotFoundError,
    ArtifactStore,
    Manifest,
    TrainingInfo,
    fingerprint,
    load_artifact,
    stored_state,
    with_calibration,
)
from densitywatch.density.calibration import calibrate
from densitywatch.density.model import DensityModel
from densitywatch.density.schema import Schema
from tests.density.density_support import make_model, mixed_schema, random_encoded

torch.set_num_threads(1)


def _manifest(model: DensityModel, stream: str = "hosts") -> Manifest:
    return Manifest(
        stream=stream,
        feature_schema=model.schema,
        architecture=model.architecture,
        training=TrainingInfo(
            train_nll=1.5,
            val_nll=1.6,
            n_train=80,
            n_val=20,
            epochs=3,
            duration_s=0.1,
            seed=0,
            data_fingerprint="abc",
        ),
    )


@pytest.fixture
def model() -> DensityModel:
    return make_model(mixed_schema(), orderings=3, seed=4)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


@pytest.fixture
def written(store: ArtifactStore, model: DensityModel) -> Path:
    return store.write(model, _manifest(model)).path


def test_round_trip_gives_bit_identical_log_prob(store: ArtifactStore, model: DensityModel) -> None:
    artifact = store.write(model, _manifest(model))
    loaded = store.load("hosts")
    assert loaded.version == artifact.version == "000001"
    assert loaded.manifest == artifact.manifest
    assert not loaded.model.training
    assert torch.equal(loaded.model.orderings, model.orderings)
    x = torch.from_numpy(random_encoded(mixed_schema(), 200, seed=0))
    with torch.no_grad():
        expected = model.log_prob(x)
        got = loaded.model.log_prob(x)
        assert torch.equal(got.total, expected.total)
        assert torch.equal(got.terms, expected.terms)
        assert torch.equal(loaded.model.fold().log_prob(x).total, expected.total)


def test_a_rounded_model_is_stored_packed_in_half_precision_and_loads_bit_identically(
    store: ArtifactStore, model: DensityModel, tmp_path: Path
) -> None:
    rounded = model.round_to_half_()
    written = store.write(rounded, _manifest(rounded)).path
    dense = tmp_path / "dense.safetensors"
    save_file({k: v.contiguous() for k, v in rounded.state_dict().items()}, str(dense))
    # About half the entries (the masks' ones) at half the bytes each.
    assert (written / WEIGHTS).stat().st_size < 0.35 * dense.stat().st_size
    with safe_open(str(written / WEIGHTS), framework="pt") as f:
        packed = {n: f.get_tensor(n) for n in f.keys() if n.endswith(".packed")}  # noqa: SIM118
    assert len(packed) == len(rounded.net.masked_layers())
    assert all(t.dtype == torch.float16 and t.dim() == 1 for t in packed.values())
    x = torch.from_numpy(random_encoded(mixed_schema(), 200, seed=5))
    with torch.no_grad():
        expected, got = rounded.log_prob(x), load_artifact(written).model.log_prob(x)
    assert torch.equal(got.total, expected.total) and torch.equal(got.terms, expected.terms)


def test_a_model_not_rounded_keeps_float32_and_still_loads_bit_identically(
    store: ArtifactStore, model: DensityModel
) -> None:
    state = stored_state(model)
    assert state["net.layers.0.weight.packed"].dtype == torch.float32
    written = store.write(model, _manifest(model)).path
    x = torch.from_numpy(random_encoded(mixed_schema(), 50, seed=6))
    with torch.no_grad():
        assert torch.equal(load_artifact(written).model(x), model(x))


def test_a_packed_layer_of_the_wrong_length_is_refused_before_building(
    written: Path, model: DensityModel
) -> None:
    state = stored_state(model)
    full = state["net.layers.1.weight.packed"]
    for edited in (full[:-1].clone(), full.reshape(1, -1).clone()):  # too short; not one row
        save_file({**state, "net.layers.1.weight.packed": edited}, str(written / WEIGHTS))
        _resign_weights(written)
        with pytest.raises(ArtifactCorruptError, match="masks keep"):
            load_artifact(written)
    del state["net.layers.1.weight.packed"]
    save_file(state, str(written / WEIGHTS))
    _resign_weights(written)
    with pytest.raises(ArtifactCorruptError, match="packed layers"):
        load_artifact(written)


def test_round_trip_of_a_folded_model(store: ArtifactStore, model: DensityModel) -> None:
    x = torch.from_numpy(random_encoded(mixed_schema(), 50, seed=1))
    with torch.no_grad():
        expected = model.log_prob(x).total
        store.write(model.fold(), _manifest(model))
        assert torch.equal(store.load("hosts").model.log_prob(x).total, expected)


def _rewrite_as_an_older_writer(folder: Path, drop: dict[str, list[str]]) -> None:
    """Remove fields an older writer did not know (`drop`: section -> keys; "feature" for
    every feature) and re-sign the manifest the way that writer signed it."""
    body = json.loads((folder / MANIFEST).read_text())
    for feature in body["feature_schema"]["features"]:
        for key in drop.get("feature", []):
            feature.pop(key, None)
    for key in drop.get("architecture", []):
        body["architecture"].pop(key, None)
    unsigned = {k: v for k, v in body.items() if k != "manifest_sha256"}
    body["manifest_sha256"] = hashlib.sha256(
        json.dumps(unsigned, sort_keys=True).encode()
    ).hexdigest()
    (folder / MANIFEST).write_text(json.dumps(body, indent=2))


def test_a_manifest_from_before_atoms_and_shared_weights_still_loads(
    written: Path, model: DensityModel
) -> None:
    plain = make_model(
        Schema(features=[f.model_copy(update={"atom": None}) for f in mixed_schema().features]),
        orderings=3,
        seed=4,
    )
    store = ArtifactStore(written.parent.parent / "older")
    folder = store.write(plain, _manifest(plain)).path
    _rewrite_as_an_older_writer(folder, {"feature": ["atom"], "architecture": ["shared_weights"]})
    loaded = load_artifact(folder)
    assert loaded.manifest.architecture.shared_weights is False
    x = torch.from_numpy(random_encoded(plain.schema, 20, seed=3))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), plain(x))


def test_weights_are_stored_without_masks(written: Path) -> None:
    with safe_open(str(written / WEIGHTS), framework="pt") as f:
        names = list(f.keys())
    assert names and not [n for n in names if n.endswith(".mask")]


def test_weights_written_with_their_masks_load_and_a_wrong_mask_is_refused(
    written: Path, model: DensityModel
) -> None:
    full = {k: v.contiguous() for k, v in model.state_dict().items()}
    masks = {n: b.contiguous() for n, b in model.named_buffers() if n.endswith(".mask")}
    save_file({**full, **masks}, str(written / WEIGHTS))
    _resign_weights(written)
    x = torch.from_numpy(random_encoded(mixed_schema(), 20, seed=2))
    with torch.no_grad():
        assert torch.equal(load_artifact(written).model(x), model(x))
    name = next(iter(masks))
    masks[name] = 1.0 - masks[name]
    save_file({**full, **masks}, str(written / WEIGHTS))
    _resign_weights(written)
    with pytest.raises(ArtifactCorruptError, match="does not follow from the orderings"):
        load_artifact(written)


def _resign_weights(folder: Path) -> None:
    body = json.loads((folder / MANIFEST).read_text())
    body["weights_sha256"] = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    unsigned = {k: v for k, v in body.items() if k != "manifest_sha256"}
    body["manifest_sha256"] = hashlib.sha256(
        json.dumps(unsigned, sort_keys=True).encode()
    ).hexdigest()
    (folder / MANIFEST).write_text(json.dumps(body))


@pytest.mark.parametrize("folded", [False, True])
def test_shared_weights_round_trip_with_one_copy_of_the_weights(
    store: ArtifactStore, folded: bool
) -> None:
    shared = make_model(mixed_schema(), orderings=4, seed=9, shared=True)
    x = torch.from_numpy(random_encoded(mixed_schema(), 50, seed=4))
    with torch.no_grad():
        expected = shared.log_prob(x).total
        written = store.write(shared.fold() if folded else shared, _manifest(shared)).path
        loaded = load_artifact(written)
        assert torch.allclose(loaded.model.log_prob(x).total, expected, atol=1e-5)
        assert torch.allclose(loaded.model.fold().log_prob(x).total, expected, atol=1e-5)
    with safe_open(str(written / WEIGHTS), framework="pt") as f:
        shapes = {n: f.get_slice(n).get_shape() for n in f.keys() if n.endswith("weight")}  # noqa: SIM118
    assert shapes and all(shape[0] == 1 for shape in shapes.values())


def test_versions_increment_and_old_versions_are_kept(
    store: ArtifactStore, model: DensityModel
) -> None:
    assert store.streams() == [] and store.versions("hosts") == []
    with pytest.raises(ArtifactNotFoundError, match="hosts"):
        store.latest("hosts")
    first = store.write(model, _manifest(model))
    first_bytes = (first.path / WEIGHTS).read_bytes(), (first.path / MANIFEST).read_bytes()
    other = make_model(mixed_schema(), orderings=3, seed=5)
    second = store.write(other, _manifest(other))
    assert [first.version, second.version] == ["000001", "000002"]
    assert store.versions("hosts") == ["000001", "000002"] and store.latest("hosts") == "000002"
    assert store.load("hosts").version == "000002"
    assert store.load("hosts", "000001").version == "000001"
    assert (
        (first.path / WEIGHTS).read_bytes(),
        (first.path / MANIFEST).read_bytes(),
    ) == first_bytes
    store.write(model, _manifest(model, stream="disks"))
    assert store.streams() == ["disks", "hosts"]
    assert not [p for p in (store.root / "hosts").iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(ArtifactNotFoundError):
        store.load("hosts", "000009")
    with pytest.raises(ArtifactNotFoundError):
        store.load("nope")


def test_concurrent_writers_get_distinct_versions(
    store: ArtifactStore, model: DensityModel
) -> None:
    versions: list[str] = []
    lock = threading.Lock()

    def write() -> None:
        artifact = store.write(model, _manifest(model))
        with lock:
            versions.append(artifact.version)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == ["000001", "000002", "000003", "000004"]
    for v in versions:
        assert store.load("hosts", v).manifest.version == v


def test_truncated_weights_are_refused(written: Path) -> None:
    data = (written / WEIGHTS).read_bytes()
    (written / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactCorruptError, match="truncated or edited"):
        load_artifact(written)


def test_one_edited_weights_byte_is_refused(written: Path) -> None:
    data = bytearray((written / WEIGHTS).read_bytes())
    data[-5] ^= 0x01
    (written / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ArtifactCorruptError, match="checksum"):
        load_artifact(written)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["training"].update(n_train=81),
        lambda m: m["feature_schema"]["features"][0].update(mean=2.5),
        lambda m: m.update(weights_sha256="0" * 64),
        lambda m: m["architecture"].update(hidden_width=17),
    ],
)
def test_an_edited_manifest_value_is_refused(written: Path, edit: object) -> None:
    body = json.loads((written / MANIFEST).read_text())
    edit(body)  # type: ignore[operator]
    (written / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(ArtifactCorruptError, match="edited"):
        load_artifact(written)


@pytest.mark.parametrize("missing", [MANIFEST, WEIGHTS])
def test_a_missing_file_is_refused(written: Path, missing: str) -> None:
    (written / missing).unlink()
    with pytest.raises(ArtifactCorruptError, match=f"no {missing}"):
        load_artifact(written)


def test_a_manifest_that_is_not_json_is_refused(written: Path) -> None:
    (written / MANIFEST).write_bytes(b"\x00not json{")
    with pytest.raises(ArtifactCorruptError, match="not a valid manifest"):
        load_artifact(written)


def _resign(path: Path) -> None:
    """Make the manifest vouch for whatever weights file is there now (as an attacker with
    write access could), so the loader's own format checks are what stands in the way."""
    body = json.loads((path / MANIFEST).read_text())
    body["weights_sha256"] = hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()
    manifest = Manifest.model_validate(body)
    body["manifest_sha256"] = manifest.content_digest()
    (path / MANIFEST).write_text(json.dumps(body))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("resign", [False, True])
def test_a_malicious_pickle_is_refused_without_running(
    written: Path, tmp_path: Path, resign: bool
) -> None:
    # The payload is live: unpickling it elsewhere does create its marker.
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()

    marker = tmp_path / "pwned-marker"
    (written / WEIGHTS).write_bytes(pickle.dumps({"weights": _Payload(marker)}))
    if resign:
        _resign(written)
    with pytest.raises(ArtifactCorruptError) as info:
        load_artifact(written)
    assert ("not a safetensors file" if resign else "checksum") in str(info.value)
    assert not marker.exists()

    # torch.save's zip format with the same payload is refused as well.
    torch.save({"weights": _Payload(marker)}, written / WEIGHTS)
    _resign(written)
    with pytest.raises(ArtifactCorruptError):
        load_artifact(written)
    assert not marker.exists()


def test_valid_safetensors_that_do_not_match_the_manifest_are_refused(
    written: Path, model: DensityModel
) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    del state["net.layers.0.weight"]
    save_file(state, str(written / WEIGHTS))
    _resign(written)
    with pytest.raises(ArtifactCorruptError, match="does not match its manifest"):
        load_artifact(written)


@pytest.mark.parametrize(
    "broken",
    [
        lambda o: torch.full_like(o, 99),  # out of range
        lambda o: torch.zeros_like(o),  # not a permutation (repeats)
        lambda o: o[:, :-1].contiguous(),  # too few features
    ],
    ids=["out-of-range", "repeated", "short"],
)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_weights_with_a_broken_ordering_are_refused(
    written: Path, model: DensityModel, broken: object, packed: bool
) -> None:
    """A well-formed file whose `orderings` is not a permutation of the features is corrupt:
    it must be refused, neither crash with another exception nor load a broken model."""
    from safetensors.torch import save_file

    dense = {k: v.contiguous() for k, v in model.state_dict().items()}
    state = stored_state(model) if packed else dense
    state["orderings"] = broken(state["orderings"])  # type: ignore[operator]
    save_file(state, str(written / WEIGHTS))
    _resign(written)
    with pytest.raises(ArtifactCorruptError):
        load_artifact(written)


def test_with_calibration_makes_a_child_version(store: ArtifactStore, model: DensityModel) -> None:
    parent = store.write(model, _manifest(model))
    before = {p.name: p.read_bytes() for p in parent.path.iterdir()}
    scores = np.random.default_rng(0).normal(size=200)
    calibration = calibrate(scores, {"warning": 0.05})
    child = store.write(parent.model, with_calibration(parent, calibration))
    assert child.version == "000002"
    assert child.manifest.parent_version == "000001"
    assert child.manifest.calibration == calibration
    assert child.manifest.weights_sha256 == parent.manifest.weights_sha256
    assert child.manifest.created_at >= parent.manifest.created_at
    assert {p.name: p.read_bytes() for p in parent.path.iterdir()} == before
    reloaded_parent = store.load("hosts", "000001")
    assert reloaded_parent.manifest.calibration is None
    assert reloaded_parent.manifest.parent_version is None
    reloaded_child = store.load("hosts")
    assert reloaded_child.manifest.calibration == calibration
    x = torch.from_numpy(random_encoded(mixed_schema(), 20, seed=3))
    with torch.no_grad():
        assert torch.equal(reloaded_child.model(x), reloaded_parent.model(x))


def test_fingerprint_tracks_content_shape_and_dtype() -> None:
    a = np.arange(6.0)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(a.reshape(2, 3))
    assert fingerprint(a) != fingerprint(a.astype(np.float32))
    b = a.copy()
    b[3] += 1e-12
    assert fingerprint(a) != fingerprint(b)


def test_a_narrow_model_with_spread_degrees_round_trips_packed(store: ArtifactStore) -> None:
    from densitywatch.density.model import ArchitectureSpec
    from densitywatch.density.schema import FeatureSpec

    schema = Schema(features=[FeatureSpec(name=f"x{j}") for j in range(12)])
    arch = ArchitectureSpec(hidden_width=4, n_components=2, n_orderings=3, spread_degrees=True)
    torch.manual_seed(0)
    model = DensityModel(schema, arch).round_to_half_()
    loaded = load_artifact(store.write(model, _manifest(model)).path)
    assert loaded.manifest.architecture.spread_degrees
    x = torch.randn(20, 12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
