"""The calibration job: score a clean hold-out with a stream's model, set one split-conformal
threshold per level, and write a new artifact version that carries the calibration.

The hold-out must not have been used for training; its rows with a missing feature value
are dropped (the service rejects such points too). With a label column, labelled anomalies
are left out of the calibration set and used to measure ROC-AUC, PR-AUC and precision /
recall at each threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from densitywatch.density.artifact import Artifact, ArtifactStore, fingerprint, with_calibration
from densitywatch.density.calibration import (
    DEFAULT_LEVELS,
    DEFAULT_TAIL_SIZE,
    Calibration,
    CalibrationError,
    calibrate,
    min_scores_for,
)
from densitywatch.density.model import DensityModel, log_prob_numpy
from densitywatch.density.schema import RawType, Schema
from densitywatch.errors import CalibrationDataError
from densitywatch.training.data import (
    CellOrigin,
    DataError,
    encode_table,
    missing_mask,
    text_cell_origin,
)
from densitywatch.training.report import (
    CalibrationReport,
    LabelMetrics,
    LevelReport,
)
from densitywatch.training.report import write_report as write_files

SCORE_BATCH = 8192
_TRUE_LABELS = {"1", "true", "yes", "y", "anomaly", "anomalous", "outlier", "abnormal"}
_FALSE_LABELS = {"0", "false", "no", "n", "normal", "inlier", "clean", ""}


class PreparedData(BaseModel):
    """Encoded records of a table, rows with a missing value removed."""

    model_config = {"arbitrary_types_allowed": True}

    x: np.ndarray
    labels: np.ndarray | None
    n_records: int
    n_dropped_missing: int


# -- data against schema ----------------------------------------------------------------
def _is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "fiub"


def _check_column(
    schema: Schema, name: str, values: np.ndarray, stream: str, origin: CellOrigin | None
) -> np.ndarray:
    """Validate one feature column's type; returns its missing-value mask.

    `origin` is where the column's first non-numeric cell is, if it holds text."""
    spec = next(f for f in schema.features if f.name == name)
    missing = missing_mask(values)
    if len(values) and missing.all():
        raise CalibrationDataError(f"column {name!r} is entirely missing")
    if spec.raw_type == RawType.NUMBER and not _is_numeric(values):
        where = origin.not_a_number(name) if origin else f"column {name!r} holds text"
        raise CalibrationDataError(f"{where} (the model of stream {stream!r} expects numbers)")
    if spec.raw_type == RawType.STRING and _is_numeric(values):
        raise CalibrationDataError(
            f"column {name!r} holds numbers but the model of stream {stream!r} expects text "
            f"(categories such as {list((spec.vocabulary or [])[:3])})"
        )
    if spec.raw_type == RawType.NUMBER and np.isinf(values).any():
        row = int(np.flatnonzero(np.isinf(values))[0])
        raise CalibrationDataError(f"column {name!r}, row {row}: {values[row]} (must be finite)")
    return missing


def encode_columns(
    schema: Schema, columns: Mapping[str, np.ndarray], stream: str
) -> tuple[np.ndarray, np.ndarray]:
    """Encode a table's columns with a model's schema: (encoded rows, kept-row mask).

    Rows with a missing feature value are left out (mask False). Raises CalibrationDataError
    naming the column for a missing column, a column of the wrong type (text: with the file,
    line and value of its first non-numeric cell), or an infinite value.
    """
    absent = [name for name in schema.names if name not in columns]
    if absent:
        raise CalibrationDataError(
            f"the data lacks column(s) {absent} that the model of stream {stream!r} needs "
            f"(its features: {schema.names}; the data has: {list(columns)})"
        )
    n = len(columns[schema.names[0]])
    keep = np.ones(n, dtype=bool)
    for name in schema.names:
        values = np.asarray(columns[name])
        origin = None if _is_numeric(values) else text_cell_origin(columns, name)
        keep &= ~_check_column(schema, name, values, stream, origin)
    kept = {name: np.asarray(columns[name])[keep] for name in schema.names}
    try:
        x = encode_table(schema, kept)
    except DataError as e:
        raise CalibrationDataError(f"stream {stream!r}: {e}") from e
    return x, keep


def parse_labels(values: np.ndarray, column: str) -> np.ndarray:
    """Label column -> bool (True = anomaly): non-zero numbers or words like 'anomaly'."""
    if _is_numeric(values):
        v = values.astype(np.float64)
        if np.isnan(v).any():
            row = int(np.flatnonzero(np.isnan(v))[0])
            raise CalibrationDataError(f"label column {column!r} is missing at row {row}")
        return v != 0
    out = np.empty(len(values), dtype=bool)
    for i, raw in enumerate(values):
        word = "" if raw is None else str(raw).strip().lower()
        if word in _TRUE_LABELS:
            out[i] = True
        elif word in _FALSE_LABELS and word != "":
            out[i] = False
        else:
            raise CalibrationDataError(
                f"label column {column!r}, row {i}: cannot read {raw!r} as a label "
                f"(use 0/1, true/false or normal/anomaly)"
            )
    return out


def prepare(
    schema: Schema,
    columns: Mapping[str, np.ndarray],
    stream: str,
    label_column: str | None = None,
) -> PreparedData:
    """Validate and encode calibration data (and its labels, when a label column is named)."""
    labels = None
    if label_column is not None:
        if label_column not in columns:
            raise CalibrationDataError(
                f"label column {label_column!r} is not in the data (columns: {list(columns)})"
            )
        labels = parse_labels(np.asarray(columns[label_column]), label_column)
    x, keep = encode_columns(schema, columns, stream)
    return PreparedData(
        x=x,
        labels=labels[keep] if labels is not None else None,
        n_records=len(keep),
        n_dropped_missing=int((~keep).sum()),
    )


# -- sizes, scores, metrics -------------------------------------------------------------
def min_records_for(fpr: float, trim_fraction: float = 0.0) -> int:
    """Smallest calibration set (before trimming) that supports a level at this rate."""
    need = min_scores_for(fpr)
    n = max(need, math.ceil(need / (1.0 - trim_fraction)) - 1)
    while n - math.floor(trim_fraction * n) < need:
        n += 1
    return n


def check_size(n: int, levels: Mapping[str, float], trim_fraction: float, stream: str) -> None:
    """Refuse, saying how much data is needed, a set too small for the rarest level."""
    name, fpr = min(levels.items(), key=lambda kv: kv[1])
    need = min_records_for(fpr, trim_fraction)
    if n < need:
        trim = f" with trim {trim_fraction:g}" if trim_fraction else ""
        raise CalibrationError(
            f"stream {stream!r}: level {name!r} (fpr {fpr:g}) needs at least {need} clean "
            f"calibration records{trim}; got {n}. Supply more hold-out data or use a larger fpr."
        )


def score(model: DensityModel, x: np.ndarray, show_progress: bool | None = None) -> np.ndarray:
    """log p of encoded records (`log_prob_numpy` in eval mode, with a progress bar)."""
    model.eval()
    starts = range(0, len(x), SCORE_BATCH)
    bar = tqdm(starts, desc="score", unit="batch", disable=_disable(show_progress))
    parts = [log_prob_numpy(model, x[start : start + SCORE_BATCH]) for start in bar]
    return np.concatenate(parts) if parts else np.empty(0)


def _disable(show_progress: bool | None) -> bool | None:
    """tqdm's `disable`: None = only on a terminal."""
    return None if show_progress is None else not show_progress


def label_metrics(log_p: np.ndarray, labels: np.ndarray, levels: list[LevelReport]) -> LabelMetrics:
    """ROC-AUC, PR-AUC, and precision / recall per level (filled into `levels`)."""
    anomaly_score = -np.nan_to_num(log_p, neginf=-1e300, posinf=1e300)
    n_anom = int(labels.sum())
    both = 0 < n_anom < len(labels)
    for level in levels:
        flagged = log_p < level.threshold
        tp = int((flagged & labels).sum())
        level.precision = tp / int(flagged.sum()) if flagged.any() else None
        level.recall = tp / n_anom if n_anom else None
    return LabelMetrics(
        n_anomalies=n_anom,
        n_normal=len(labels) - n_anom,
        roc_auc=float(roc_auc_score(labels, anomaly_score)) if both else None,
        pr_auc=float(average_precision_score(labels, anomaly_score)) if both else None,
    )


def _level_reports(calibration: Calibration, clean_scores: np.ndarray) -> list[LevelReport]:
    return [
        LevelReport(
            name=lv.name,
            target_fpr=lv.target_fpr,
            threshold=lv.threshold,
            rank=lv.rank,
            calibration_rate=float((clean_scores < lv.threshold).mean()),
        )
        for lv in calibration.levels
    ]


def _quantiles(scores: np.ndarray) -> dict[str, float]:
    qs = {"min": 0.0, "p001": 0.001, "p01": 0.01, "p10": 0.1, "median": 0.5, "max": 1.0}
    return {k: float(np.quantile(scores, q)) for k, q in qs.items()}


# -- the job ------------------------------------------------------------------------------
class CalibrationOutcome(BaseModel):
    """The report plus the scores behind it (for plotting)."""

    model_config = {"arbitrary_types_allowed": True}

    report: CalibrationReport
    artifact_path: Path
    clean_scores: np.ndarray
    anomaly_scores: np.ndarray


def calibrate_stream(
    store: ArtifactStore,
    stream: str,
    columns: Mapping[str, np.ndarray],
    *,
    levels: Mapping[str, float] | None = None,
    trim_fraction: float = 0.0,
    label_column: str | None = None,
    version: str | None = None,
    data_source: str = "",
    tail_size: int = DEFAULT_TAIL_SIZE,
    report_root: Path | None = None,
    write_report: bool = True,
    show_progress: bool | None = None,
) -> CalibrationReport:
    """Calibrate a stream's model (newest version by default) on a clean hold-out table.

    Writes a new artifact version carrying the calibration and, unless `write_report` is
    False, a PNG + JSON report into `<report_root>/<stream>/<new version>/` (default
    `<store>/<stream>/reports/<new version>/`, outside the immutable version folders).
    Raises CalibrationDataError for data that does not fit the model and CalibrationError
    for a set too small.
    """
    artifact = store.load(stream, version)
    outcome = run_calibration(
        artifact,
        columns,
        levels=levels,
        trim_fraction=trim_fraction,
        label_column=label_column,
        data_source=data_source,
        tail_size=tail_size,
        store=store,
        show_progress=show_progress,
    )
    report = outcome.report
    if write_report:
        if report_root is None:
            folder = store.root / stream / "reports" / report.version
        else:
            folder = Path(report_root) / stream / report.version
        write_files(report, outcome.clean_scores, outcome.anomaly_scores, folder)
    return report


def calibrate_encoded(
    store: ArtifactStore,
    artifact: Artifact,
    x: np.ndarray,
    levels: Mapping[str, float] | None = None,
) -> Artifact:
    """Calibrate on already-encoded clean records and write the calibrated child version.

    The library shortcut for data already known to fit the schema (benchmarks, tests);
    `run_calibration` is the job's path, with validation, labels and reports.
    """
    calibration = calibrate(
        score(artifact.model, x, show_progress=False),
        None if levels is None else dict(levels),
        data_fingerprint=fingerprint(x),
    )
    return store.write(artifact.model, with_calibration(artifact, calibration))


def run_calibration(
    artifact: Artifact,
    columns: Mapping[str, np.ndarray],
    *,
    store: ArtifactStore,
    levels: Mapping[str, float] | None = None,
    trim_fraction: float = 0.0,
    label_column: str | None = None,
    data_source: str = "",
    tail_size: int = DEFAULT_TAIL_SIZE,
    show_progress: bool | None = None,
) -> CalibrationOutcome:
    """Score, calibrate and write the new version; no report files."""
    levels = dict(DEFAULT_LEVELS if levels is None else levels)
    _check_levels(levels, trim_fraction)
    stream = artifact.stream
    data = prepare(artifact.manifest.feature_schema, columns, stream, label_column)
    anomalous = data.labels if data.labels is not None else np.zeros(len(data.x), dtype=bool)
    clean_x = data.x[~anomalous]
    check_size(len(clean_x), levels, trim_fraction, stream)
    data_fp = fingerprint(clean_x)
    if data_fp == artifact.manifest.training.data_fingerprint:
        raise CalibrationDataError(
            f"stream {stream!r}: this is the model's training data; calibrate on a hold-out "
            "the model has not seen, or the thresholds will be too lax"
        )
    log_p = score(artifact.model, data.x, show_progress)
    clean = log_p[~anomalous]
    calibration = calibrate(
        clean, levels, trim_fraction=trim_fraction, tail_size=tail_size, data_fingerprint=data_fp
    )
    written = store.write(artifact.model, with_calibration(artifact, calibration))
    level_reports = _level_reports(calibration, clean)
    metrics = label_metrics(log_p, data.labels, level_reports) if data.labels is not None else None
    report = CalibrationReport(
        stream=stream,
        parent_version=artifact.version,
        version=written.version,
        calibrated_at=calibration.created_at,
        data_source=data_source,
        data_fingerprint=data_fp,
        n_records=data.n_records,
        n_dropped_missing=data.n_dropped_missing,
        n_scores=calibration.n_scores,
        n_trimmed=calibration.n_trimmed,
        trim_fraction=trim_fraction,
        levels=level_reports,
        score_quantiles=_quantiles(clean),
        metrics=metrics,
    )
    return CalibrationOutcome(
        report=report,
        artifact_path=written.path,
        clean_scores=clean,
        anomaly_scores=log_p[anomalous],
    )


def _check_levels(levels: Mapping[str, float], trim_fraction: float) -> None:
    if not levels:
        raise CalibrationError("at least one level is needed")
    for name, fpr in levels.items():
        if not name or not (0.0 < fpr < 1.0):
            raise CalibrationError(f"level {name!r}: fpr must be in (0, 1), got {fpr}")
    if not (0.0 <= trim_fraction < 0.5):
        raise CalibrationError(f"trim fraction must be in [0, 0.5), got {trim_fraction}")
