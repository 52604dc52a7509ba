"""The streams config (TOML): where the model store is, and each stream's data source.

```toml
store = "store"                  # model store folder
[streams.hosts]
source = "data/hosts.csv"        # CSV with header, .parquet, .npy, .npz, or a folder of them
columns = ["cpu", "mem", "os"]   # optional: default all columns (except label_column)
label_column = "label"           # optional, never a feature; used by calibrate for metrics
[streams.hosts.types]            # optional per-column kind: continuous|integer|categorical
os = "categorical"
```

Relative paths are relative to the folder of the config file. Unknown keys are errors, so
that a typo cannot silently drop a setting.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from densitywatch.density.artifact import is_stream_name
from densitywatch.density.schema import FeatureKind
from densitywatch.errors import ConfigError


class StreamConfig(BaseModel):
    """One stream: a named data source and how to read its columns."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Stream name (the TOML table's key); also its store folder.")
    source: Path = Field(description="Data file or folder of files.")
    columns: list[str] | None = Field(
        default=None, description="Feature columns, in order; None: all but label_column."
    )
    label_column: str | None = Field(default=None, description="Column of labels, not a feature.")
    types: dict[str, FeatureKind] = Field(
        default_factory=dict, description="Per-column kind overrides."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not is_stream_name(name):
            raise ValueError(
                f"stream name {name!r} must be 1-128 letters, digits, '_', '.', '-' "
                "and start with a letter or digit"
            )
        return name

    @field_validator("columns")
    @classmethod
    def _columns(cls, columns: list[str] | None) -> list[str] | None:
        if columns is None:
            return None
        if not columns:
            raise ValueError("must list at least one column (or be left out for all columns)")
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise ValueError(f"lists {duplicates} more than once")
        return columns

    @model_validator(mode="after")
    def _consistent(self) -> StreamConfig:
        if self.label_column is not None and self.columns and self.label_column in self.columns:
            raise ValueError(f"label_column {self.label_column!r} is also listed in columns")
        if self.label_column is not None and self.label_column in self.types:
            raise ValueError(f"types names the label column {self.label_column!r}")
        if self.columns is not None:
            unknown = sorted(set(self.types) - set(self.columns))
            if unknown:
                raise ValueError(f"types name columns not in columns: {unknown}")
        return self


class StreamsConfig(BaseModel):
    """The whole config: the store folder and the streams by name."""

    model_config = ConfigDict(extra="forbid")

    store: Path = Field(default=Path("store"), description="Model store folder.")
    streams: dict[str, StreamConfig] = Field(description="Streams by name.")

    @model_validator(mode="before")
    @classmethod
    def _name_streams(cls, data: Any) -> Any:
        """Each stream's name is its table's key."""
        if isinstance(data, Mapping) and isinstance(data.get("streams"), Mapping):
            streams = {
                key: ({"name": key, **table} if isinstance(table, Mapping) else table)
                for key, table in data["streams"].items()
            }
            data = {**data, "streams": streams}
        return data

    @model_validator(mode="after")
    def _non_empty(self) -> StreamsConfig:
        if not self.streams:
            raise ValueError("no streams: add at least one [streams.NAME] table")
        for key, stream in self.streams.items():
            if stream.name != key:
                raise ValueError(f"stream {key!r}: 'name' is not a setting (the key is the name)")
        return self

    def resolved(self, base: Path) -> StreamsConfig:
        """A copy with relative paths made absolute against `base`."""

        def resolve(path: Path) -> Path:
            path = path.expanduser()
            return path if path.is_absolute() else (base / path).resolve()

        streams = {
            name: s.model_copy(update={"source": resolve(s.source)})
            for name, s in self.streams.items()
        }
        return self.model_copy(update={"store": resolve(self.store), "streams": streams})

    def sorted_names(self) -> list[str]:
        return sorted(self.streams)


def _describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as 'stream 'x': key: message'."""
    loc = [str(p) for p in error["loc"]]
    where = ""
    if len(loc) >= 2 and loc[0] == "streams":
        where = f"stream {loc[1]!r}: "
        loc = loc[2:]
    key = ".".join(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}unknown key {key!r}"
    if kind == "missing":
        return f"{where}missing key {key!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}{key}: {message}" if key else f"{where}{message}"


def parse_config(raw: Mapping[str, Any], base: Path, origin: str = "config") -> StreamsConfig:
    """Validate a parsed TOML document; relative paths are resolved against `base`."""
    try:
        config = StreamsConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise ConfigError(f"{origin}: {problems}") from None
    return config.resolved(base)


def load_config(path: str | Path) -> StreamsConfig:
    """Read and validate a streams config file; raises ConfigError naming stream and key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse_config(raw, path.resolve().parent, origin=str(path))
