"""The README documents every service setting, by its environment variable."""

from __future__ import annotations

from pathlib import Path

from service.settings import ServiceSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [
        f"DENSITYWATCH_{name.upper()}"
        for name in ServiceSettings.model_fields
        if f"`DENSITYWATCH_{name.upper()}`" not in text
    ]
    assert not missing, f"README lacks settings: {missing}"


def test_every_setting_has_a_description() -> None:
    undocumented = [n for n, f in ServiceSettings.model_fields.items() if not f.description]
    assert not undocumented
