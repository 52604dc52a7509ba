"""The calibration report: what a calibration run did (`CalibrationReport`), a histogram of
calibration log p with the thresholds marked (and labelled anomalies' log p, if any) as PNG,
and the numbers as JSON.

Drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global state).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel, Field

PNG_NAME = "calibration.png"
JSON_NAME = "calibration.json"
N_BINS = 60
_COLOURS = ["#d98c00", "#c0392b", "#7d3c98", "#1f618d"]


class LevelReport(BaseModel):
    """One calibrated level and how it behaves on the data it was calibrated on."""

    name: str
    target_fpr: float
    threshold: float = Field(description="Outlier at this level iff log p < threshold.")
    rank: int = Field(description="The threshold is the rank-th smallest calibration score.")
    calibration_rate: float = Field(description="Share of calibration scores below it.")
    precision: float | None = Field(default=None, description="On labelled data, if any.")
    recall: float | None = Field(default=None, description="On labelled data, if any.")


class LabelMetrics(BaseModel):
    """Detection quality on labelled data (anomaly = positive, score = -log p)."""

    n_anomalies: int
    n_normal: int
    roc_auc: float | None = Field(description="None when only one class is present.")
    pr_auc: float | None = Field(description="Average precision; None without anomalies.")


class CalibrationReport(BaseModel):
    """What one calibration run did: the new version, its levels and the data behind them."""

    stream: str
    parent_version: str
    version: str = Field(description="The new artifact version carrying the calibration.")
    calibrated_at: datetime
    data_source: str = ""
    data_fingerprint: str
    n_records: int = Field(description="Rows read.")
    n_dropped_missing: int = Field(description="Rows dropped for a missing feature value.")
    n_scores: int = Field(description="Calibration scores after trimming.")
    n_trimmed: int
    trim_fraction: float
    levels: list[LevelReport]
    score_quantiles: dict[str, float] = Field(description="Calibration log p quantiles.")
    metrics: LabelMetrics | None = None
    report_png: str | None = None
    report_json: str | None = None


def _x_range(
    clean: np.ndarray, anomalies: np.ndarray, thresholds: list[float]
) -> tuple[float, float]:
    """From below the lowest threshold / most anomalies to the top calibration score."""
    low = [float(clean.min()), *thresholds]
    if len(anomalies):
        low.append(float(np.quantile(anomalies, 0.05)))
    lo, hi = min(low), float(clean.max())
    pad = 0.02 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def draw(report: CalibrationReport, clean: np.ndarray, anomalies: np.ndarray, path: Path) -> None:
    """Write the histogram PNG."""
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    thresholds = [lv.threshold for lv in report.levels]
    lo, hi = _x_range(clean, anomalies, thresholds)
    bins = np.linspace(lo, hi, N_BINS + 1).tolist()
    ax.hist(
        np.clip(clean, lo, hi),
        bins=bins,
        color="#5d8aa8",
        alpha=0.8,
        label=f"calibration (n={len(clean)})",
    )
    if len(anomalies):
        clipped = int(np.sum(anomalies < lo))
        note = f"; {clipped} below the axis drawn at its left edge" if clipped else ""
        ax.hist(
            np.clip(anomalies, lo, hi),
            bins=bins,
            color="#c0392b",
            alpha=0.6,
            label=f"labelled anomalies (n={len(anomalies)}{note})",
        )
    for i, level in enumerate(report.levels):
        colour = _COLOURS[i % len(_COLOURS)]
        ax.axvline(
            level.threshold,
            color=colour,
            linestyle="--",
            linewidth=1.5,
            label=f"{level.name}: fpr {level.target_fpr:g}, log p < {level.threshold:.3g}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("log p(x)")
    ax.set_ylabel("records")
    ax.set_title(f"{report.stream} v{report.version}: calibration log p")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_report(
    report: CalibrationReport, clean: np.ndarray, anomalies: np.ndarray, folder: Path
) -> tuple[Path, Path]:
    """Write `calibration.png` and `calibration.json` into folder; records their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png, js = folder / PNG_NAME, folder / JSON_NAME
    draw(report, np.asarray(clean), np.asarray(anomalies), png)
    report.report_png, report.report_json = str(png), str(js)
    counts, edges = np.histogram(clean, bins=N_BINS)
    body = report.model_dump(mode="json")
    body["histogram"] = {"counts": counts.tolist(), "edges": edges.tolist()}
    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(js)
    return png, js
