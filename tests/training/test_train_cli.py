"""`densitywatch train` end to end: config -> data -> fit -> artifact in the store."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from densitywatch.cli import main
from densitywatch.cli.train import parse_shard, select_streams, shard_from_env
from densitywatch.density.artifact import ArtifactStore, fingerprint
from densitywatch.density.model import log_prob_numpy
from densitywatch.density.schema import FeatureKind, RawType
from densitywatch.errors import UsageError
from densitywatch.training.config import parse_config
from densitywatch.training.data import drop_missing, encode_table, read_table

FAST = ["--max-steps", "20", "--quiet"]


def make_config(tmp_path: Path, streams: dict[str, dict[str, Any]]) -> Path:
    lines = ['store = "store"']
    for name, table in streams.items():
        lines.append(f"[streams.{name}]")
        for key, value in table.items():
            if key != "types":
                lines.append(f"{key} = {json.dumps(value)}")
        if "types" in table:
            lines.append(f"[streams.{name}.types]")
            lines += [f'{k} = "{v}"' for k, v in table["types"].items()]
    path = tmp_path / "densitywatch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def hosts_config(
    tmp_path: Path, write_csv: Callable[..., Path], hosts_rows: Callable[..., list[list[Any]]]
) -> Path:
    (tmp_path / "data").mkdir()
    write_csv(
        tmp_path / "data" / "hosts.csv",
        ["cpu", "mem", "os", "label"],
        hosts_rows(240, missing_every=20),
    )
    return make_config(
        tmp_path,
        {
            "hosts": {
                "source": "data/hosts.csv",
                "label_column": "label",
                "types": {"mem": "integer"},
            }
        },
    )


def test_train_writes_a_loadable_artifact_with_a_complete_manifest(
    hosts_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(hosts_config), "--seed", "3", *FAST]) == 0
    out = capsys.readouterr().out
    line = re.fullmatch(
        r"hosts: val NLL (-?\d+\.\d{3}) nats/point \(train (-?\d+\.\d{3})\), \d+\.\d s, "
        r"228 rows \(12 dropped: missing values\) -> (\S+)\n",
        out,
    )
    assert line, out
    store = ArtifactStore(tmp_path / "store")
    assert store.streams() == ["hosts"] and store.versions("hosts") == ["000001"]
    assert Path(line.group(3)).resolve() == store.path("hosts", "000001").resolve()

    artifact = store.load("hosts")
    manifest = artifact.manifest
    assert manifest.stream == "hosts" and manifest.version == "000001"
    schema = manifest.feature_schema
    assert schema.names == ["cpu", "mem", "os"]  # the label column is not a feature
    kinds = {f.name: (f.kind, f.raw_type) for f in schema.features}
    assert kinds == {
        "cpu": (FeatureKind.CONTINUOUS, RawType.NUMBER),
        "mem": (FeatureKind.INTEGER, RawType.NUMBER),
        "os": (FeatureKind.CATEGORICAL, RawType.STRING),
    }
    info = manifest.training
    assert info.n_dropped_missing == 12
    assert info.n_train + info.n_val == 228 and info.n_val == round(228 * 0.2)
    assert info.seed == 3 and info.device == "cpu"
    assert info.source == str((tmp_path / "data" / "hosts.csv").resolve())
    assert info.hyperparameters["fit"]["max_steps"] == 20
    assert info.hyperparameters["type_overrides"] == {"mem": "integer"}
    capacity = info.hyperparameters["capacity"]
    assert capacity["hidden_width"] == artifact.model.architecture.hidden_width
    assert len(info.candidates) >= 1 and all("val_nll" in c for c in info.candidates)
    assert info.val_nll == pytest.approx(min(c["val_nll"] for c in info.candidates))
    assert f"{info.val_nll:.3f}" == line.group(1) and f"{info.train_nll:.3f}" == line.group(2)
    assert info.epochs >= 1 and info.duration_s > 0
    assert info.hyperparameters["fit"]["refit"] is True
    assert info.refit_epochs is not None and 1 <= info.refit_epochs <= info.epochs

    # the fingerprint is of exactly the encoded training records
    table, _, _ = drop_missing(read_table(tmp_path / "data" / "hosts.csv", ["cpu", "mem", "os"]))
    x = encode_table(schema, table)
    assert info.data_fingerprint == fingerprint(x)
    log_p = log_prob_numpy(artifact.model, x)
    assert np.isfinite(log_p).all()
    # after the refit, train_nll is over every row the model was fitted on: all 228
    assert -log_p.mean() == pytest.approx(info.train_nll, rel=1e-3)


def test_no_refit_keeps_the_selected_candidate(hosts_config: Path, tmp_path: Path) -> None:
    assert main(["train", "--config", str(hosts_config), "--no-refit", *FAST]) == 0
    info = ArtifactStore(tmp_path / "store").load("hosts").manifest.training
    assert info.hyperparameters["fit"]["refit"] is False and info.refit_epochs is None


def test_training_again_adds_a_version_and_json_summary(
    hosts_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(hosts_config), *FAST]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(hosts_config), "--json", *FAST]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["command"] == "train" and summary["ok"] is True and summary["error"] is None
    assert list(summary["streams"]) == ["hosts"]
    entry = summary["streams"]["hosts"]
    assert entry["ok"] is True and entry["status"] == "ok" and entry["version"] == "000002"
    assert entry["n_rows"] == 228 and entry["n_dropped_missing"] == 12
    manifest = ArtifactStore(tmp_path / "store").load("hosts").manifest
    assert entry["val_nll"] == manifest.training.val_nll
    assert ArtifactStore(tmp_path / "store").versions("hosts") == ["000001", "000002"]


@pytest.fixture
def five_streams(tmp_path: Path, write_csv: Callable[..., Path]) -> Path:
    rng = np.random.default_rng(1)
    streams = {}
    for name in ["e", "a", "d", "b", "c"]:
        rows = [[f"{v:.4f}", f"{w:.4f}"] for v, w in rng.normal(size=(40, 2))]
        write_csv(tmp_path / f"{name}.csv", ["v", "w"], rows)
        streams[name] = {"source": f"{name}.csv"}
    return make_config(tmp_path, streams)


def test_shards_cover_every_stream_exactly_once(five_streams: Path, tmp_path: Path) -> None:
    fast = ["--max-steps", "2", "--quiet"]
    store = ArtifactStore(tmp_path / "store")
    assert main(["train", "--config", str(five_streams), "--shard", "0/2", *fast]) == 0
    assert store.streams() == ["a", "c", "e"]
    assert main(["train", "--config", str(five_streams), "--shard", "1/2", *fast]) == 0
    assert store.streams() == ["a", "b", "c", "d", "e"]
    assert all(store.versions(s) == ["000001"] for s in store.streams())


def test_shard_from_env_and_stream_selection(
    five_streams: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    args = ["train", "--config", str(five_streams), "--max-steps", "2", "--quiet"]
    assert main([*args, "--shard-from-env", "--shard-count", "3"]) == 0
    assert ArtifactStore(tmp_path / "store").streams() == ["c"]
    assert main([*args, "--stream", "d", "--stream", "a"]) == 0
    assert ArtifactStore(tmp_path / "store").streams() == ["a", "c", "d"]


@given(n_streams=st.integers(1, 12), n_shards=st.integers(1, 6))
def test_select_streams_partitions_the_streams(n_streams: int, n_shards: int) -> None:
    names = [f"s{i:02d}" for i in range(n_streams)]
    config = parse_config({"streams": {n: {"source": "x.csv"} for n in names}}, Path("/b"))
    shards = [select_streams(config, None, (k, n_shards)) for k in range(n_shards)]
    assert sorted(s for shard in shards for s in shard) == names
    for k, shard in enumerate(shards):
        assert all(names.index(s) % n_shards == k for s in shard)


def test_shard_arguments() -> None:
    assert parse_shard("1/3") == (1, 3)
    for bad in ["3/3", "-1/2", "1", "a/b", "0/0"]:
        with pytest.raises(Exception, match="shard"):
            parse_shard(bad)
    assert shard_from_env(4, {"JOB_COMPLETION_INDEX": "3"}) == (3, 4)
    env = {"JOB_COMPLETION_INDEX": "0", "DENSITYWATCH_SHARD_COUNT": "2"}
    assert shard_from_env(None, env) == (0, 2)
    with pytest.raises(UsageError, match="JOB_COMPLETION_INDEX"):
        shard_from_env(2, {})
    with pytest.raises(UsageError, match="--shard-count"):
        shard_from_env(None, {"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(UsageError, match="0 <= k < N"):
        shard_from_env(2, {"JOB_COMPLETION_INDEX": "5"})


def test_a_failing_stream_is_reported_on_one_line_and_leaves_nothing(
    tmp_path: Path,
    write_csv: Callable[..., Path],
    hosts_rows: Callable[..., list[list[Any]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_csv(tmp_path / "good.csv", ["cpu", "mem", "os", "label"], hosts_rows(60))
    lines = ["a,b,c"] + [f"{i},{i * 2},{i % 3}" for i in range(20)] + ["7,8"]
    (tmp_path / "broken.csv").write_text("\n".join(lines) + "\n")
    write_csv(tmp_path / "gone.csv", ["a", "b"], [[i, ""] for i in range(30)])
    config = make_config(
        tmp_path,
        {
            "broken": {"source": "broken.csv"},
            "gone": {"source": "gone.csv"},
            "good": {"source": "good.csv"},
        },
    )
    assert main(["train", "--config", str(config), *FAST]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert errors == [
        f"densitywatch train: error: stream 'broken': {tmp_path.resolve() / 'broken.csv'} "
        "line 22: expected 3 fields, got 2",
        f"densitywatch train: error: stream 'gone': {tmp_path.resolve() / 'gone.csv'}: "
        "column 'b' is entirely missing",
    ]
    assert captured.out.startswith("good: val NLL")
    store_root = tmp_path / "store"
    assert ArtifactStore(store_root).streams() == ["good"]
    assert not (store_root / "broken").exists() and not (store_root / "gone").exists()


def test_schema_errors_fail_the_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.csv").write_text("v,flat\n" + "".join(f"{i}.5,1\n" for i in range(30)))
    config = make_config(tmp_path, {"c": {"source": "c.csv"}})
    assert main(["train", "--config", str(config), *FAST]) == 1
    assert "stream 'c': column 'flat' is constant" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stream", "nope"], "no stream 'nope' in the config (streams: hosts)"),
        (["--shard-count", "2"], "--shard-count is only used with --shard-from-env"),
        (["--max-steps", "0"], "--max-steps must be at least 1"),
    ],
)
def test_usage_errors_exit_2(
    hosts_config: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(hosts_config), *extra]) == 2
    assert message in capsys.readouterr().err


def test_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "absent.toml not found" in capsys.readouterr().err
    bad = make_config(tmp_path, {"s": {"sorce": "x.csv"}})
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "stream 's': unknown key 'sorce'" in err and "stream 's': missing key 'source'" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_usage_error(
    hosts_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(hosts_config), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
