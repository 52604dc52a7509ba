"""The streams config: parsing, path resolution, and errors that name stream and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from densitywatch.density.schema import FeatureKind
from densitywatch.training.config import ConfigError, load_config, parse_config

EXAMPLE = """
store = "models"
[streams.hosts]
source = "data/hosts.csv"
columns = ["cpu", "mem", "os"]
label_column = "label"
[streams.hosts.types]
os = "categorical"
mem = "integer"

[streams.disk]
source = "/abs/disk.parquet"
"""


def write(tmp_path: Path, text: str, name: str = "densitywatch.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_example_config_parses_with_paths_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(folder, EXAMPLE)
    monkeypatch.chdir(tmp_path)  # not the config's folder: paths must not follow the cwd
    config = load_config(Path("conf") / path.name)
    assert config.store == folder.resolve() / "models"
    assert sorted(config.streams) == ["disk", "hosts"]
    hosts = config.streams["hosts"]
    assert hosts.name == "hosts"
    assert hosts.source == folder.resolve() / "data" / "hosts.csv"
    assert hosts.columns == ["cpu", "mem", "os"]
    assert hosts.label_column == "label"
    assert hosts.types == {"os": FeatureKind.CATEGORICAL, "mem": FeatureKind.INTEGER}
    disk = config.streams["disk"]
    assert disk.source == Path("/abs/disk.parquet")
    assert disk.columns is None and disk.label_column is None and disk.types == {}
    assert config.sorted_names() == ["disk", "hosts"]


def test_store_defaults_to_store_beside_the_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[streams.a]\nsource = "a.csv"\n'))
    assert config.store == tmp_path.resolve() / "store"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config(write(tmp_path, '[streams.a]\nsource = "~/a.csv"\n'))
    assert config.streams["a"].source == tmp_path / "home" / "a.csv"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[streams.hosts]\nsource = "a.csv"\ncolums = ["x"]\n',
            "stream 'hosts': unknown key 'colums'",
        ),
        ('[streams.hosts]\ncolumns = ["x"]\n', "stream 'hosts': missing key 'source'"),
        (
            '[streams.hosts]\nsource = "a.csv"\n[streams.hosts.types]\nos = "categoric"\n',
            "stream 'hosts': types.os: Input should be 'continuous', 'integer' or 'categorical'",
        ),
        ('stor = "x"\n[streams.a]\nsource = "a.csv"\n', "unknown key 'stor'"),
        ('store = "x"\n', "missing key 'streams'"),
        ("[streams]\n", "no streams"),
        ('[streams.hosts]\nsource = "a.csv"\ncolumns = []\n', "stream 'hosts': columns: must list"),
        (
            '[streams.hosts]\nsource = "a.csv"\ncolumns = ["a", "b", "a"]\n',
            "stream 'hosts': columns: lists ['a'] more than once",
        ),
        (
            '[streams.hosts]\nsource = "a.csv"\ncolumns = ["a", "y"]\nlabel_column = "y"\n',
            "stream 'hosts': label_column 'y' is also listed in columns",
        ),
        (
            '[streams.hosts]\nsource = "a.csv"\ncolumns = ["a"]\n'
            '[streams.hosts.types]\nb = "integer"\n',
            "stream 'hosts': types name columns not in columns: ['b']",
        ),
        (
            '[streams.hosts]\nsource = "a.csv"\nname = "other"\n',
            "'name' is not a setting",
        ),
        ("[streams.hosts]\nsource = 3\n", "stream 'hosts': source:"),
        ('[streams."../up"]\nsource = "a.csv"\n', "stream '../up': name: stream name '../up'"),
    ],
)
def test_invalid_configs_name_the_stream_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[streams.a\nsource = 1\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = '[streams.a]\ncolums = 1\n[streams.b]\nsource = "b.csv"\n[streams.b.types]\nx = "real"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "stream 'a': missing key 'source'" in message
    assert "stream 'a': unknown key 'colums'" in message
    assert "stream 'b': types.x" in message


SEGMENT = st.text(alphabet="abcXYZ019_-. ", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and s.strip() == s
)


@given(parts=st.lists(SEGMENT, min_size=1, max_size=4))
def test_relative_sources_resolve_under_the_config_folder(parts: list[str]) -> None:
    base = Path("/srv/conf")
    relative = os.path.join(*parts)
    config = parse_config({"streams": {"s": {"source": relative}}}, base)
    assert config.streams["s"].source == (base / relative).resolve()
    assert config.streams["s"].source.is_absolute()


@given(parts=st.lists(SEGMENT, min_size=1, max_size=4))
def test_absolute_sources_are_kept(parts: list[str]) -> None:
    absolute = "/" + "/".join(parts)
    config = parse_config({"streams": {"s": {"source": absolute}}}, Path("/elsewhere"))
    assert config.streams["s"].source == Path(absolute)


KINDS = [k.value for k in FeatureKind]


@given(kind=st.one_of(st.sampled_from(KINDS), st.text(max_size=12)), column=st.text(min_size=1))
def test_type_overrides_accept_exactly_the_three_kinds(kind: str, column: str) -> None:
    raw = {"streams": {"s": {"source": "a.csv", "types": {column: kind}}}}
    if kind in KINDS:
        config = parse_config(raw, Path("/base"))
        assert config.streams["s"].types == {column: FeatureKind(kind)}
    else:
        with pytest.raises(ConfigError) as info:
            parse_config(raw, Path("/base"))
        assert "stream 's': types." in str(info.value)


@given(name=st.text(max_size=20))
def test_stream_names_are_safe_folder_names(name: str) -> None:
    raw = {"streams": {name: {"source": "a.csv"}}}
    safe = (
        0 < len(name) <= 128
        and name[0].isascii()
        and name[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)
    )
    if safe:
        assert parse_config(raw, Path("/b")).streams[name].name == name
    else:
        with pytest.raises(ConfigError, match="stream name"):
            parse_config(raw, Path("/b"))
