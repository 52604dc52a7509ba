"""docs/settings.md is generated from ServiceSettings and must match it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from densitywatch.service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "scripts" / "gen_settings_docs.py"
REFERENCE = ROOT / "docs" / "settings.md"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_settings_docs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_reference_is_current(generator: ModuleType) -> None:
    assert REFERENCE.read_text(encoding="utf-8") == generator.render(), (
        "docs/settings.md is stale: run python scripts/gen_settings_docs.py"
    )


def test_reference_has_one_row_per_setting(generator: ModuleType) -> None:
    rows = [line for line in generator.render().splitlines() if line.startswith("| `")]
    names = [row.split("`")[1] for row in rows]
    assert names == [f"DENSITYWATCH_{name.upper()}" for name in ServiceSettings.model_fields]


def test_check_mode_detects_a_stale_file(generator: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "settings.md"
    assert generator.main(["--check", "--out", str(out)]) == 1  # missing
    assert generator.main(["--out", str(out)]) == 0
    assert generator.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("50051", "50052"), encoding="utf-8")
    assert generator.main(["--check", "--out", str(out)]) == 1


def test_defaults_are_written_as_environment_values(generator: ModuleType) -> None:
    rows = {row.split("`")[1]: row for row in generator.render().splitlines() if "| `" in row}
    assert "| `true` |" in rows["DENSITYWATCH_BATCHING_ENABLED"]
    assert "| `{}` |" in rows["DENSITYWATCH_PINNED"]
    assert "| `16777216` (16 MiB) | ≥ 1024 |" in rows["DENSITYWATCH_MAX_MESSAGE_BYTES"]
    assert "| `Path \\| None` | unset |" in rows["DENSITYWATCH_TLS_CERT_FILE"]


def test_every_setting_has_a_description() -> None:
    undocumented = [n for n, f in ServiceSettings.model_fields.items() if not f.description]
    assert not undocumented
