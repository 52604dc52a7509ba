"""Semi-supervised detection benchmark on the ADBench classical datasets (`--pool adbench`) or
on ADBench's image and text embeddings (`--pool adbench-embeddings`).

Protocol (as the published table): per dataset and seed, fit on a random 50% of the normal rows,
test on the other 50% of normals plus all anomalies. Scores are anomaly scores (−log p for the
density methods); ROC-AUC and PR-AUC are reported in percent, mean ± std over seeds.

A run can be split by dataset (`--shard K/N`, e.g. one shard per machine or core) and the
shards' results combined (`--merge`) into the document one run of all datasets would write.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from benchmarks.common import (
    REPO_ROOT,
    atomic_write,
    command_line,
    commands_markdown,
    git_commit,
    machine_info,
    write_results,
)
from benchmarks.detection.methods import (
    METHODS,
    TORCH_METHODS,
    MethodOptions,
    MethodRun,
    Split,
    runner,
)

NAME = "detection"
# Pool (subfolder of --data) -> stem of its result files.
POOLS: dict[str, str] = {"adbench": NAME, "adbench-embeddings": f"{NAME}-embeddings"}
DEFAULT_POOL = "adbench"
POOL_TITLES = {
    "adbench": "ADBench classical",
    "adbench-embeddings": "ADBench CV/NLP embeddings",
}
MODULE = "benchmarks.detection"
# Version 2: densitywatch's ranking metrics come from a whole-fit-half model and its FPR from a
# separate calibrated one (version 1 used the calibrated model for both); --resume never mixes.
PROTOCOL_VERSION = 2
PARTIAL_SUFFIX = ".partial.json"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
PUBLISHED_CSV = Path("published") / "semi_supervised_aucroc.csv"
DENSITY_METHODS = ("densitywatch", "gmm", "maf", "nsf")  # methods that report log p
GET_ADBENCH = (
    "get the ADBench classical datasets from the repository Minqi824/ADBench, folder "
    "adbench/datasets/Classical (.npz files with arrays X and y), into DATA/adbench/"
)
GET_EMBEDDINGS = (
    "get the ADBench embeddings from the repository Minqi824/ADBench, folders "
    "adbench/datasets/CV_by_ResNet18 and NLP_by_BERT (.npz files with arrays X and y), into "
    "DATA/adbench-embeddings/ with the folder name as a prefix of each file name"
)
GET_POOL = {"adbench": GET_ADBENCH, "adbench-embeddings": GET_EMBEDDINGS}
PROTOCOL_NOTES = [
    "Splits: per seed a random 50% of normals is the fit half; test = other normals + all "
    "anomalies. The published table (DTE/ADBench code) used a fixed, unshuffled normal split, "
    "duplicated datasets under 1000 rows up to 1000 rows and subsampled datasets over 50000 rows "
    "to 50000; this run does neither unless --max-rows is given.",
    "PyOD peers run with default parameters (IForest random_state=seed) on inputs standardised "
    "by a StandardScaler fitted on the fit rows, as ADBench does.",
    "gmm: inputs standardised; n_components chosen from {1,2,4,8,16} (at most n/(d+1)) by "
    "likelihood on 20% of the fit half held out, refitted on the whole fit half; full covariance, "
    "reg_covar 1e-6 (raised x10 only if every fit fails); log p corrected by the "
    "standardisation's log-Jacobian so NLL is in raw units.",
    "Every per-dataset entry names the commit that computed it (`commit`).",
    "test_nll_per_dim: mean −log p of the TEST NORMALS divided by the number of features. "
    "densitywatch scores integer-valued columns (n_integer_features) by the probability of the "
    "lattice point (uniform dequantisation), GMM by a density at that point, which can spike on "
    "discrete data: on datasets with integer columns the two NLLs are not in the same units.",
]


METHOD_NOTES = {
    "maf": "maf, nsf: zuko's MAF and NSF (5 transforms, hidden_features (128, 128)) on inputs "
    "standardised like the peers'; Adam lr 1e-3, batch min(256, n), early stopping on the NLL "
    "of a seeded random 10% of the fit rows (patience 20 epochs, at most 500 epochs and 20 000 "
    "steps), best state restored; torch seeded by the split's seed. Columns constant on the "
    "fit rows stay out of the flow, each a Gaussian of std 1e-3 (raw units) around its "
    "constant, as GMM's reg_covar makes them. log p in raw units; a non-finite test log p is "
    "set below every finite one and counted (nonfinite_log_p). val_nll_per_dim (per seed) is "
    "the held-out NLL of the fit rows, raw units.",
    "sogaal": "sogaal: PyOD's SO_GAAL with default parameters (it takes no random_state: torch "
    "is seeded with the split's seed before the fit) on standardised inputs; no likelihood. "
    "Its score is 1 − PyOD's decision_function: that returns the discriminator's D(x), the "
    "probability that x is real data (higher = more normal; pyod issue #119), where the "
    "paper (Liu et al. 2019, Algorithm 1) scores outliers by 1 − D(x). No fit cap by default: "
    "its fit is linear in the rows (about 10 s for 20 000 x 10 on one thread).",
}
METHOD_NOTES["nsf"] = METHOD_NOTES["maf"]


class HarnessError(Exception):
    """Bad input to the benchmark (missing data, unknown dataset or method)."""


@dataclass
class Dataset:
    name: str  # published-table name, e.g. magic.gamma; the file stem in the embeddings pool
    path: Path


def result_stem(pool: str, shard: Shard | None = None) -> str:
    """Stem of a run's result files: `detection`, `detection-embeddings`, or a shard's
    `detection-shard-0-of-4`, `detection-embeddings-shard-0-of-4`."""
    base = POOLS[pool]
    return f"{base}-shard-{shard.index}-of-{shard.count}" if shard else base


T = TypeVar("T")
SHARD_PATTERN = re.compile(r"([0-9]+)/([0-9]+)")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the datasets whose position in the sorted selection is
    `index` modulo `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        """Stem of this shard's result files in the adbench pool, e.g. `detection-shard-0-of-4`
        (`result_stem` for any pool)."""
        return result_stem(DEFAULT_POOL, self)

    def of(self, items: Sequence[T]) -> list[T]:
        return [item for i, item in enumerate(items) if i % self.count == self.index]


def parse_shard(text: str) -> Shard:
    """`K/N` with 0 <= K < N (ASCII digits only) as a Shard."""
    match = SHARD_PATTERN.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return Shard(index, count)


def dataset_name(path: Path, pool: str = DEFAULT_POOL) -> str:
    """Name of a dataset file: in the adbench pool its published-table name
    (`22_magic.gamma.npz` -> `magic.gamma`), in the embeddings pool the file stem
    (`CV_by_ResNet18_MVTec-AD_bottle.npz` -> `CV_by_ResNet18_MVTec-AD_bottle`)."""
    stem = path.name.removesuffix(".npz")
    return re.sub(r"^\d+_", "", stem).lower() if pool == "adbench" else stem


def pool_folder(data: Path, pool: str) -> Path:
    """DATA/POOL, or DATA itself when it holds no pool folder (DATA is then the pool's folder;
    one named after another pool is refused, so that one pool's files never pass for another's)."""
    if not data.is_dir():
        raise HarnessError(f"data folder {data} does not exist; {GET_POOL[pool]}")
    if (data / pool).is_dir():
        return data / pool
    other_pool = data.name in POOLS and data.name != pool
    if other_pool or any((data / name).is_dir() for name in POOLS):
        raise HarnessError(f"no folder {data / pool} for --pool {pool}; {GET_POOL[pool]}")
    return data


def find_datasets(data: Path, pool: str = DEFAULT_POOL) -> list[Dataset]:
    """The .npz datasets under DATA/POOL (or DATA itself), sorted by name."""
    folder = pool_folder(data, pool)
    found = [Dataset(dataset_name(p, pool), p) for p in sorted(folder.glob("*.npz"))]
    if not found:
        raise HarnessError(f"no .npz datasets in {folder}; {GET_POOL[pool]}")
    return sorted(found, key=lambda d: d.name)


def select(datasets: list[Dataset], names: list[str] | None) -> list[Dataset]:
    if not names:
        return datasets
    by_name = {d.name.lower(): d for d in datasets} | {d.path.stem.lower(): d for d in datasets}
    missing = [n for n in names if n.lower() not in by_name]
    if missing:
        known = ", ".join(d.name for d in datasets)
        raise HarnessError(f"unknown dataset(s) {', '.join(missing)}; available: {known}")
    chosen = {by_name[n.lower()].name: by_name[n.lower()] for n in names}
    return sorted(chosen.values(), key=lambda d: d.name)


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X as float64 and y as 0/1 ints; rejects NaN/inf and malformed files."""
    with np.load(path, allow_pickle=False) as npz:
        if "X" not in npz or "y" not in npz:
            raise HarnessError(f"{path}: expected arrays X and y, found {sorted(npz.keys())}")
        x = np.asarray(npz["X"], dtype=np.float64)
        y = np.asarray(npz["y"]).astype(np.int64).ravel()
    if x.ndim != 2 or len(x) != len(y):
        raise HarnessError(f"{path}: X must be (n, d) with n = len(y); got {x.shape}, {y.shape}")
    if not np.isfinite(x).all():
        raise HarnessError(f"{path}: X contains NaN or inf")
    if not set(np.unique(y)) <= {0, 1} or y.sum() == 0 or (y == 0).sum() < 4:
        raise HarnessError(f"{path}: y must be 0/1 with anomalies and at least 4 normal rows")
    return x, y


def make_split(x: np.ndarray, y: np.ndarray, seed: int, max_rows: int | None) -> Split:
    """Random half of the normals to fit; the rest of the normals plus all anomalies to test."""
    rng = np.random.default_rng(seed)
    if max_rows is not None and len(y) > max_rows:
        keep = np.sort(rng.choice(len(y), size=max_rows, replace=False))
        x, y = x[keep], y[keep]
    normals = rng.permutation(np.flatnonzero(y == 0))
    n_fit = len(normals) // 2
    test = np.concatenate([np.sort(normals[n_fit:]), np.flatnonzero(y == 1)])
    return Split(x_fit=x[np.sort(normals[:n_fit])], x_test=x[test], y_test=y[test], seed=seed)


def seed_record(run: MethodRun, split: Split) -> dict[str, Any]:
    """Per-seed metrics of one method (fractions in percent)."""
    y = split.y_test
    score = np.nan_to_num(run.score, nan=0.0, posinf=1e300, neginf=-1e300)
    rec: dict[str, Any] = {
        "roc_auc": 100.0 * float(roc_auc_score(y, score)),
        "pr_auc": 100.0 * float(average_precision_score(y, score)),
        "train_time_s": run.train_time_s,
        "score_time_s": run.score_time_s,
        "n_fit": run.n_fit,
        "test_normals": int((y == 0).sum()),
        "test_anomalies": int((y == 1).sum()),
    }
    if run.log_p is not None:
        d = split.x_fit.shape[1]
        rec["test_nll_per_dim"] = float(-np.mean(run.log_p[y == 0]) / d)
    if run.calibrated is not None:
        below = run.calibrated.test_log_p < run.calibrated.threshold_1pct
        rec["fpr_at_1pct"] = 100.0 * float(below[y == 0].mean())
        rec["recall_at_1pct"] = 100.0 * float(below[y == 1].mean())
    if run.extra:
        rec.update(run.extra)
    return rec


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _std(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(finite)) if finite else None


def aggregate(records: list[dict[str, Any]], n_features: int) -> dict[str, Any]:
    """Mean (± std) over seeds of one method's per-seed records on one dataset."""
    out: dict[str, Any] = {}
    for key in ("roc_auc", "pr_auc"):
        vals = [r[key] for r in records]
        out[key], out[f"{key}_std"] = _mean(vals), _std(vals)
    out["train_time_s"] = _mean([r["train_time_s"] for r in records])
    out["score_time_s"] = _mean([r["score_time_s"] for r in records])
    if any("test_nll_per_dim" in r for r in records):
        out["test_nll_per_dim"] = _mean([r.get("test_nll_per_dim") for r in records])
    if "n_components" in records[0]:
        out["n_components"] = [r["n_components"] for r in records]
    if "val_nll_per_dim" in records[0]:  # the flows' held-out NLL of the fit rows
        out["val_nll_per_dim"] = _mean([r.get("val_nll_per_dim") for r in records])
        out["epochs"] = [r.get("epochs") for r in records]
    if "nonfinite_log_p" in records[0]:
        out["nonfinite_log_p"] = sum(int(r.get("nonfinite_log_p") or 0) for r in records)
    out["n_train"] = round(float(np.mean([r["n_fit"] for r in records])))
    out["n_features"] = n_features
    out["test_normals"] = records[0]["test_normals"]
    if "n_calib" in records[0]:
        out["n_calib"] = records[0]["n_calib"]
        out["fpr_at_1pct"] = _mean([r.get("fpr_at_1pct") for r in records])
        out["recall_at_1pct"] = _mean([r.get("recall_at_1pct") for r in records])
    return out


def read_published(data: Path, pool: str = DEFAULT_POOL) -> dict[str, dict[str, float]]:
    """Published ROC-AUC (%) per dataset per method; empty when the CSV is absent and for
    the embeddings pool (the published table covers the classical datasets only)."""
    path = data / PUBLISHED_CSV
    if pool != "adbench" or not path.is_file():
        return {}
    table: dict[str, dict[str, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            table[row["dataset"].lower()] = {
                k: float(v) for k, v in row.items() if k != "dataset" and not k.endswith("_std")
            }
    return table


def summarise(
    datasets: dict[str, dict[str, Any]], methods: list[str], published: dict[str, dict[str, float]]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Per-method means over datasets and the published means over the same datasets."""
    summary: dict[str, Any] = {}
    for m in methods:
        rows = [d[m] for d in datasets.values() if m in d]
        summary[m] = {
            "mean_roc_auc": _mean([r["roc_auc"] for r in rows]),
            "mean_pr_auc": _mean([r["pr_auc"] for r in rows]),
            "mean_train_time_s": _mean([r["train_time_s"] for r in rows]),
            "datasets": len(rows),
        }
        if m in DENSITY_METHODS:
            # The median: one dataset whose NLL spikes (GMM on cardio: 2978) would own a mean.
            nll = [r.get("test_nll_per_dim") for r in rows]
            finite = [v for v in nll if v is not None and math.isfinite(v)]
            summary[m]["median_test_nll_per_dim"] = float(np.median(finite)) if finite else None
    if "densitywatch" in methods:
        dw = summary["densitywatch"]
        pairs = [
            (d["densitywatch"].get("test_nll_per_dim"), d["gmm"].get("test_nll_per_dim"))
            for d in datasets.values()
            if "densitywatch" in d and "gmm" in d
        ]
        dw["nll_wins_vs_gmm"] = sum(
            1 for a, b in pairs if a is not None and b is not None and a < b
        )
        dw["nll_compared"] = len(pairs)
        for other in ("maf", "nsf"):
            if other in methods:
                wins, compared = _nll_wins(datasets, "densitywatch", other)
                dw[f"nll_wins_vs_{other}"], dw[f"nll_compared_{other}"] = wins, compared
        dw["nll_same_measure"] = _same_measure_nll(datasets, methods)
        fprs = [
            d["densitywatch"]
            for d in datasets.values()
            if "densitywatch" in d and d["densitywatch"]["test_normals"] >= 1000
        ]
        dw["datasets_fpr_eligible"] = sum(1 for r in fprs if r.get("fpr_at_1pct") is not None)
        dw["datasets_fpr_in_range"] = sum(
            1 for r in fprs if r.get("fpr_at_1pct") is not None and 0.5 <= r["fpr_at_1pct"] <= 2.0
        )
    covered = [published[n] for n in datasets if n in published]
    pub_methods = sorted({k for row in covered for k in row})
    published_summary = {
        k: float(np.mean([row[k] for row in covered if k in row])) for k in pub_methods
    }
    return summary, published_summary


def _same_measure_nll(datasets: dict[str, dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Mean test NLL per dimension of each density method over the datasets where all of them
    are densities of the same (continuous) measure, and densitywatch's wins there."""
    density = [m for m in methods if m in DENSITY_METHODS]
    names = [n for n, d in datasets.items() if same_measure(d) and all(m in d for m in density)]
    subset = {n: datasets[n] for n in names}
    out: dict[str, Any] = {"datasets": names}
    out["mean_test_nll_per_dim"] = {
        m: _mean([subset[n][m].get("test_nll_per_dim") for n in names]) for m in density
    }
    for other in density:
        if other != "densitywatch":
            out[f"wins_vs_{other}"] = _nll_wins(subset, "densitywatch", other)[0]
    return out


def _nll_wins(datasets: dict[str, dict[str, Any]], a: str, b: str) -> tuple[int, int]:
    """On how many datasets method a's test NLL is below b's, of those both ran on."""
    pairs = [
        (d[a].get("test_nll_per_dim"), d[b].get("test_nll_per_dim"))
        for d in datasets.values()
        if a in d and b in d
    ]
    wins = sum(1 for x, y in pairs if x is not None and y is not None and x < y)
    return wins, len(pairs)


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    """Human-readable tables of a result document."""
    methods: list[str] = result["config"]["methods"]
    pool = result["config"].get("pool", DEFAULT_POOL)
    density = [m for m in methods if m in DENSITY_METHODS]
    lines = [
        f"# Detection benchmark (semi-supervised, {POOL_TITLES[pool]})",
        "",
        f"Commit `{result['commit']}`, {result['seeds']} seeds, "
        f"{result['machine'].get('cpu', '?')} ({result['machine'].get('cpus_available', '?')} "
        "CPUs available). ROC-AUC / PR-AUC in %, mean over seeds.",
        "",
        *_provenance(result),
        "## Summary",
        "",
        "| method | mean ROC-AUC | mean PR-AUC | median NLL/d | mean train s | "
        "published mean ROC-AUC |",
        "|---|---|---|---|---|---|",
    ]
    pub = result["published_summary"]
    pub_names = {"knn": "KNN", "iforest": "IForest", "ecod": "ECOD", "lof": "LOF"}
    for m in methods:
        s = result["summary"][m]
        p = pub.get(pub_names.get(m, ""))
        lines.append(
            f"| {m} | {_fmt(s['mean_roc_auc'])} | {_fmt(s['mean_pr_auc'])} | "
            f"{_fmt(s.get('median_test_nll_per_dim'), 3)} | "
            f"{_fmt(s['mean_train_time_s'], 2)} | {_fmt(p)} |"
        )
    if pub:
        best = max(pub, key=lambda k: pub[k])
        lines.append(f"| published best ({best}) | {_fmt(pub[best])} | | | | |")
    speed = result.get("training_speed")
    if speed:
        lines += [
            "",
            f"Training speed: a {speed['rows']} x {speed['features']} stream trains in "
            f"{speed['train_time_s']:.1f} s wall (default fit, {speed['epochs']} epochs).",
        ]
    if "densitywatch" in methods:
        dw = result["summary"]["densitywatch"]
        flows_won = "".join(
            f", {other.upper()} on {dw[f'nll_wins_vs_{other}']} of {dw[f'nll_compared_{other}']}"
            for other in ("maf", "nsf")
            if f"nll_wins_vs_{other}" in dw
        )
        lines += [
            "",
            f"densitywatch NLL below GMM on {dw['nll_wins_vs_gmm']} of {dw['nll_compared']} "
            f"datasets{flows_won}; realised FPR at the 1% level within [0.5, 2.0]% on "
            f"{dw['datasets_fpr_in_range']} of {dw['datasets_fpr_eligible']} datasets with "
            "≥ 1000 test normals.",
            *_same_measure_lines(dw.get("nll_same_measure")),
        ]
    header = ["dataset", "n_train", "d", *methods, "best published"]
    if "densitywatch" in methods:
        header += ["dw NLL/d", "GMM NLL/d", "dw train s", "FPR@1%", "recall@1%"]
    lines += ["", "## ROC-AUC per dataset", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for name, d in result["datasets"].items():
        first = d[methods[0]]
        cells = [name, str(first["n_train"]), str(first["n_features"])]
        cells += [f"{_fmt(d[m]['roc_auc'])} ± {_fmt(d[m]['roc_auc_std'])}" for m in methods]
        published = d.get("published") or {}
        if published:
            top = max(published, key=lambda k: published[k])
            cells.append(f"{_fmt(published[top])} ({top})")
        else:
            cells.append("–")
        if "densitywatch" in methods:
            dw = d["densitywatch"]
            gmm = d.get("gmm", {})
            cells += [
                _fmt(dw.get("test_nll_per_dim"), 3),
                _fmt(gmm.get("test_nll_per_dim"), 3),
                _fmt(dw["train_time_s"], 1),
                _fmt(dw.get("fpr_at_1pct"), 2),
                _fmt(dw.get("recall_at_1pct"), 1),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    if density:
        lines += _nll_table(result["datasets"], density)
    lines += ["", "## PR-AUC and train time (s) per dataset", ""]
    header2 = ["dataset", *[f"{m} PR" for m in methods], *[f"{m} s" for m in methods]]
    lines += ["| " + " | ".join(header2) + " |", "|" + "---|" * len(header2)]
    for name, d in result["datasets"].items():
        cells = [name]
        cells += [f"{_fmt(d[m]['pr_auc'])} ± {_fmt(d[m]['pr_auc_std'])}" for m in methods]
        cells += [_fmt(d[m]["train_time_s"], 2) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _same_measure_lines(same: dict[str, Any] | None) -> list[str]:
    if not same or not same["datasets"]:
        return []
    means = ", ".join(f"{m} {_fmt(v, 3)}" for m, v in same["mean_test_nll_per_dim"].items())
    wins = ", ".join(
        f"{k.removeprefix('wins_vs_')} on {v}" for k, v in same.items() if k.startswith("wins_vs_")
    )
    return [
        "",
        f"On the {len(same['datasets'])} datasets where every column is a density for all "
        "density methods (no integer, categorical or atom column: "
        f"{', '.join(same['datasets'])}), mean test NLL/d: {means}; densitywatch lower than "
        f"{wins}.",
    ]


def _nll_table(datasets: dict[str, Any], density: list[str]) -> list[str]:
    """Test NLL per dimension (nats, test normals) of each density method per dataset."""
    header = ["dataset", *density]
    lines = [
        "",
        "## Test NLL per dimension",
        "",
        "Mean −log p of the test normals / d, nats, raw units (lower is better).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, d in datasets.items():
        cells = [name, *(_fmt(d.get(m, {}).get("test_nll_per_dim"), 3) for m in density)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _provenance(result: dict[str, Any]) -> list[str]:
    """Which part of the selection a shard's file covers, and the commands behind a file."""
    lines: list[str] = []
    shard = result.get("shard")
    if shard:
        lines += [
            f"Shard {shard['index']}/{shard['count']}: {len(result['datasets'])} of the "
            f"{len(shard['selection'])} selected datasets, the summary over these only; "
            "`--merge` the result files of all shards for the whole table.",
            "",
        ]
    if result.get("commands"):
        lines += [*commands_markdown(result["commands"]), ""]
    return lines


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def parse_caps(items: list[str]) -> dict[str, int]:
    caps: dict[str, int] = {}
    for item in items:
        method, _, value = item.partition("=")
        if method not in METHODS or not value.isdigit() or int(value) < 10:
            raise HarnessError(f"--fit-cap expects METHOD=ROWS (ROWS ≥ 10), got {item!r}")
        caps[method] = int(value)
    return caps


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.detection",
        description="Semi-supervised anomaly-detection benchmark, ADBench classical datasets.",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder holding adbench/*.npz and published/ (default: %(default)s)",
    )
    p.add_argument(
        "--pool",
        choices=list(POOLS),
        default=DEFAULT_POOL,
        help="datasets: DATA/adbench (the classical tabular ones) or DATA/adbench-embeddings "
        "(image and text embeddings, 512 or 768 features); results go to detection.json/.md "
        "or detection-embeddings.json/.md (default: %(default)s)",
    )
    p.add_argument("--seeds", type=int, default=5, help="number of seeds 0..N-1")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="subset, e.g. wbc glass")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip datasets already in the partial file of an identical configuration, and "
        "the finished seeds of the dataset that was running when it stopped",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="BLAS / torch threads and n_jobs of KNN and LOF"
    )
    p.add_argument(
        "--fit-cap",
        action="append",
        default=[],
        metavar="METHOD=ROWS",
        help="fit METHOD on a random subsample of at most ROWS rows (repeatable)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="subsample each dataset to at most this many rows first "
        "(50000 mimics the published protocol)",
    )
    p.add_argument(
        "--calib-fraction",
        type=float,
        default=0.2,
        help="share of the fit half, in [0, 0.5], held back to calibrate the 1%% threshold of a "
        "second densitywatch model fitted on the rest, whose realised FPR is reported (default "
        "%(default)s); ROC-AUC and NLL always come from a model fitted on the whole fit half; "
        "0 skips the second model and reports no FPR",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--no-speed",
        action="store_true",
        help="skip the 50 000 x 32 training-time measurement (a --shard other than 0 "
        "always skips it)",
    )
    p.add_argument(
        "--shard",
        type=parse_shard,
        metavar="K/N",
        help="run only the datasets at positions K, K+N, K+2N, ... (0-based) of the sorted "
        "selection and write detection-shard-K-of-N.json and .md (and the .partial.json "
        "that --resume reads) into --out; only shard 0 measures the training speed; "
        "combine the result files of all N shards with --merge",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="combine the result files (detection-shard-K-of-N.json) of shards run with the "
        "same options (every config field, --threads and --data included) at one commit, "
        "together holding each selected dataset exactly once, into detection.json and .md "
        "in --out, with the summary recomputed as one unsharded run computes it and "
        "training_speed from shard 0; takes no other option but --out; exits with status 2 "
        "and writes nothing when the files do not fit together",
    )
    return p


def calibration_note(fraction: float) -> str:
    ranking = (
        "densitywatch: ROC-AUC, PR-AUC, test NLL and train time are of a model fitted on the "
        "whole fit half, the rows its peers fit on."
    )
    if fraction == 0:
        return f"{ranking} --calib-fraction 0: no calibration; fpr_at_1pct, recall_at_1pct null."
    return ranking + (
        f" fpr_at_1pct and recall_at_1pct are of the deployment path, a second model: fitted on "
        f"the fit half less a random {fraction:.0%} held back (n_calib rows), its 1% log p "
        "threshold calibrated on those rows; fpr_at_1pct is the realised FPR (%) on the test "
        "normals, recall_at_1pct the fraction (%) of anomalies below the threshold. Both are "
        "null (and the second model is not fitted) when n_calib is under 99 rows, too few to "
        "support a 1% level."
    )


def base_notes(config: dict[str, Any]) -> list[str]:
    """The notes a configuration's result always carries."""
    notes = [*PROTOCOL_NOTES, calibration_note(config["calib_fraction"])]
    if config.get("pool", DEFAULT_POOL) != "adbench":
        notes.append(f"Pool {config['pool']}: no published scores exist for these datasets.")
    # maf and nsf share one note: dict.fromkeys keeps it once, in the order of the methods.
    notes += dict.fromkeys(METHOD_NOTES[m] for m in config["methods"] if m in METHOD_NOTES)
    for method, cap in config["fit_caps"].items():
        notes.append(f"{method}: fit on a random subsample of at most {cap} rows of the fit half.")
    if config["max_rows"]:
        notes.append(f"Datasets subsampled to at most {config['max_rows']} rows before splitting.")
    return notes


def config_of(args: argparse.Namespace, caps: dict[str, int]) -> dict[str, Any]:
    return {
        "protocol_version": PROTOCOL_VERSION,
        "pool": args.pool,
        "methods": list(args.methods),
        "seeds": list(range(args.seeds)),
        "fit_caps": caps,
        "max_rows": args.max_rows,
        "calib_fraction": args.calib_fraction,
        "threads": args.threads,
        "data": str(args.data),
    }


PROTOCOL_KEYS = (
    "protocol_version",
    "pool",
    "methods",
    "seeds",
    "fit_caps",
    "max_rows",
    "calib_fraction",
)
# Values of config keys that files written before the key existed stand for.
CONFIG_DEFAULTS: dict[str, Any] = {"pool": DEFAULT_POOL}


def _config_differences(
    a: dict[str, Any], b: dict[str, Any], keys: Sequence[str] | None = None
) -> list[str]:
    """The keys (all of both configs' by default) whose values differ, sorted."""
    names = sorted(a.keys() | b.keys()) if keys is None else keys
    return [
        k for k in names if a.get(k, CONFIG_DEFAULTS.get(k)) != b.get(k, CONFIG_DEFAULTS.get(k))
    ]


def _same_protocol(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether per-dataset results of configs a and b may share one document (--resume):
    differences in threads or data location do not change what is measured."""
    return not _config_differences(a, b, PROTOCOL_KEYS)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Run the benchmark (one shard of it with --shard) and write its result files."""
    if args.seeds < 1:
        raise HarnessError("--seeds must be at least 1")
    if not 0.0 <= args.calib_fraction <= 0.5:
        raise HarnessError(f"--calib-fraction must be in [0, 0.5], got {args.calib_fraction}")
    caps = parse_caps(args.fit_cap)
    data = Path(args.data).resolve()
    selection = select(find_datasets(data, args.pool), args.datasets)
    shard: Shard | None = args.shard
    datasets = shard.of(selection) if shard else selection
    if not datasets:
        raise HarnessError(f"--shard {shard} selects no dataset: {len(selection)} selected")
    published = read_published(data, args.pool)
    config = config_of(args, caps)
    methods: list[str] = config["methods"]
    options = MethodOptions(
        n_jobs=args.threads, fit_caps=caps, calib_fraction=config["calib_fraction"]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = result_stem(args.pool, shard)
    partial_path = out / f"{name}{PARTIAL_SUFFIX}"
    resumed = _resumed(partial_path, config) if args.resume else Resumed()
    done, done_seeds, unfinished = resumed.datasets, resumed.per_seed, resumed.unfinished
    commands = [*resumed.commands, command]
    commit = git_commit()
    notes = base_notes(config)
    todo = [d for d in datasets if d.name not in done]
    bar = tqdm(
        total=len(todo) * args.seeds * len(methods),
        disable=args.no_progress,
        desc="detection",
        unit="fit",
    )
    results: dict[str, Any] = {d.name: done[d.name] for d in datasets if d.name in done}
    seeds: dict[str, Any] = {n: done_seeds.get(n) for n in results}

    def checkpoint(running: dict[str, Any] | None) -> None:
        partial = {
            "config": config,
            "datasets": results,
            "per_seed": seeds,
            "notes": notes,
            "commands": commands,
        }
        if running is not None:
            partial["unfinished"] = running
        atomic_write(partial_path, json.dumps(_clean(partial), indent=1) + "\n")

    try:
        for ds in todo:
            # Seeds finished before an interruption are kept, with the commit that began them.
            began = unfinished.get(ds.name, {"commit": commit, "per_seed": {}})

            def save(per_seed: dict[str, Any], ds: Dataset = ds, began: dict = began) -> None:
                checkpoint({ds.name: {"commit": began["commit"], "per_seed": per_seed}})

            results[ds.name], seeds[ds.name] = run_dataset(
                ds, args.seeds, methods, options, args.max_rows, bar, began["per_seed"], save
            )
            if ds.name in published:
                results[ds.name]["published"] = published[ds.name]
            results[ds.name]["commit"] = began["commit"]
            if began["commit"] != commit:
                results[ds.name]["finished_at_commit"] = commit
            results[ds.name]["threads"] = args.threads
            checkpoint(None)
    finally:
        bar.close()
    speed = None
    if measures_speed(methods, args.no_speed, shard):
        from benchmarks.detection.dw import training_speed

        speed = training_speed()
    result = assemble(
        config,
        {d.name: results[d.name] for d in datasets},
        {d.name: seeds[d.name] for d in datasets},
        published,
        commit=commit,
        speed=speed,
        machine=machine_info(),
        commands=commands,
    )
    if shard:
        selected = [d.name for d in selection]
        result["shard"] = {"index": shard.index, "count": shard.count, "selection": selected}
    write_results(name, result, markdown(result), out_dir=out)
    return result


def measures_speed(methods: Sequence[str], no_speed: bool, shard: Shard | None) -> bool:
    """Whether this run measures training_speed: once per benchmark, so of shards only 0."""
    return "densitywatch" in methods and not no_speed and (shard is None or shard.index == 0)


@dataclass(frozen=True)
class Resumed:
    """What a partial file holds: finished datasets, their per-seed records, the records of
    the dataset that was running when the run stopped, and the commands that wrote them."""

    datasets: dict[str, Any] = field(default_factory=dict)
    per_seed: dict[str, Any] = field(default_factory=dict)
    unfinished: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


def _resumed(partial_path: Path, config: dict[str, Any]) -> Resumed:
    """The partial file at partial_path when its configuration has config's protocol;
    nothing otherwise."""
    if not partial_path.is_file():
        return Resumed()
    previous = json.loads(partial_path.read_text())
    if not _same_protocol(previous.get("config", {}), config):
        print(f"--resume: {partial_path} has another configuration; starting over", file=sys.stderr)
        return Resumed()
    return Resumed(
        previous.get("datasets", {}),
        previous.get("per_seed", {}),
        previous.get("unfinished", {}),
        previous.get("commands", []),
    )


def assemble(
    config: dict[str, Any],
    datasets: dict[str, Any],
    per_seed: dict[str, Any],
    published: dict[str, dict[str, float]],
    *,
    commit: str,
    speed: dict[str, Any] | None,
    machine: dict[str, Any],
    commands: list[str],
) -> dict[str, Any]:
    """The result document of per-dataset entries in selection order: summaries and notes
    computed from the entries, so a merge of shards computes what one run computes."""
    notes = base_notes(config)
    notes += _carried_over(datasets, commit)
    notes += _finished_later(datasets)
    notes += _calibration_from_other_runs(datasets)
    notes += _other_threads(datasets, config["threads"])
    summary, published_summary = summarise(datasets, config["methods"], published)
    result = {
        "summary": summary,
        "datasets": datasets,
        "published_summary": published_summary,
        "training_speed": speed,
        "machine": machine,
        "commit": commit,
        "seeds": len(config["seeds"]),
        "config": config,
        "notes": notes,
        "per_seed": per_seed,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commands": commands,
    }
    return _clean(result)


SHARD_RESULT_KEYS = ("config", "commit", "datasets", "per_seed", "training_speed", "machine")


def read_shard_result(path: Path) -> dict[str, Any]:
    """The result document a --shard run wrote to path."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot read {path}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("shard"), dict):
        raise HarnessError(f"{path} is not a result file of a --shard run (it has no shard record)")
    absent = [k for k in SHARD_RESULT_KEYS if k not in doc]
    if absent:
        raise HarnessError(f"{path} is not a whole shard result (no {', '.join(absent)})")
    return doc


def _check_same_run(path: Path, doc: dict[str, Any], path0: Path, doc0: dict[str, Any]) -> None:
    """Refuse shards of another configuration, commit or dataset selection than the first."""
    differ = _config_differences(doc0["config"], doc["config"])
    if differ:
        detail = "; ".join(
            f"{k}: {doc0['config'].get(k)!r} vs {doc['config'].get(k)!r}" for k in differ
        )
        raise HarnessError(f"{path0} and {path} are shards of different configurations ({detail})")
    if doc["commit"] != doc0["commit"]:
        raise HarnessError(
            f"{path0} and {path} ran at different commits ({doc0['commit']} vs {doc['commit']}); "
            "run every shard at one commit"
        )
    if doc["shard"]["selection"] != doc0["shard"]["selection"]:
        raise HarnessError(f"{path0} and {path} are shards of different dataset selections")


def _owners(shards: list[tuple[Path, dict[str, Any]]]) -> dict[str, Path]:
    """The file holding each dataset of the selection; refuses overlaps, gaps and strays."""
    owner: dict[str, Path] = {}
    for path, doc in shards:
        for name in doc["datasets"]:
            if name in owner:
                raise HarnessError(f"{owner[name]} and {path} overlap: both hold dataset {name}")
            owner[name] = path
    selection: list[str] = shards[0][1]["shard"]["selection"]
    stray = [n for n in owner if n not in selection]
    if stray:
        raise HarnessError(f"{owner[stray[0]]} holds {stray[0]}, not in its shard's selection")
    missing = [n for n in selection if n not in owner]
    if missing:
        raise HarnessError(
            f"the files miss {len(missing)} of the {len(selection)} selected datasets "
            f"({', '.join(missing)}); give the result files of every shard"
        )
    return {n: owner[n] for n in selection}


def merge(paths: list[Path], out: Path, command: str) -> dict[str, Any]:
    """Combine the result files of the shards of one run into detection.json and .md."""
    shards = [(path, read_shard_result(path)) for path in paths]
    for path, doc in shards[1:]:
        _check_same_run(path, doc, *shards[0])
    owners = _owners(shards)
    shards.sort(key=lambda s: (s[1]["shard"]["count"], s[1]["shard"]["index"]))
    docs = {path: doc for path, doc in shards}
    # Each entry keeps the commit recorded by the shard (or --resume) that computed it.
    datasets = {n: docs[p]["datasets"][n] for n, p in owners.items()}
    # The shard holding the first dataset is shard 0 (the one measuring training_speed).
    first = docs[next(iter(owners.values()))]
    result = assemble(
        first["config"],
        datasets,
        {n: docs[p]["per_seed"][n] for n, p in owners.items()},
        {n: e["published"] for n, e in datasets.items() if "published" in e},
        commit=first["commit"],
        speed=first["training_speed"],
        machine=first["machine"],
        commands=[*(c for _, doc in shards for c in doc.get("commands", [])), command],
    )
    result["notes"] += _other_machines(shards, first["machine"])
    result["merged_from"] = [
        {
            "file": str(path),
            "shard": f"{doc['shard']['index']}/{doc['shard']['count']}",
            "created_at": doc.get("created_at"),
            "machine": doc["machine"],
        }
        for path, doc in shards
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_results(result_stem(pool_of(result)), result, markdown(result), out_dir=out)
    return result


def pool_of(result: dict[str, Any]) -> str:
    """The pool a result document's run read (files from before --pool: adbench)."""
    pool: str = result["config"].get("pool", DEFAULT_POOL)
    return pool


def _other_machines(
    shards: list[tuple[Path, dict[str, Any]]], machine: dict[str, Any]
) -> list[str]:
    """A note per shard run on another machine than shard 0 (whose machine the result names)."""
    return [
        f"Shard {doc['shard']['index']}/{doc['shard']['count']} ran on another machine: "
        f"{doc['machine'].get('cpu', '?')} ({doc['machine'].get('cpus_available', '?')} CPUs "
        "available); its times are of that machine."
        for _, doc in shards
        if doc["machine"] != machine
    ]


def _other_threads(results: dict[str, Any], threads: int) -> list[str]:
    """A note per thread count, other than this run's, that computed carried-over datasets
    (e.g. shards run side by side with --threads 1, merged and finished with --resume)."""
    return [
        f"Computed with --threads {t} (config.threads is this run's): {', '.join(names)}."
        for t, names in _differing(results, "threads", threads, missing=threads).items()
    ]


def _carried_over(results: dict[str, Any], commit: str) -> list[str]:
    """A note per earlier commit whose datasets --resume carried into this result."""
    return [
        f"Carried over by --resume from commit {c}: {', '.join(names)} "
        "(each dataset's entry records the commit that computed it)."
        for c, names in _differing(results, "commit", commit, missing="unknown").items()
    ]


def _finished_later(results: dict[str, Any]) -> list[str]:
    """A note per commit that finished datasets whose first seeds an earlier commit computed
    (a run stopped inside a dataset and resumed at another commit)."""
    return [
        f"Finished by --resume at commit {c}, seeds before the interruption kept from the "
        f"commit each entry records: {', '.join(names)}."
        for c, names in _differing(results, "finished_at_commit", None, missing=None).items()
    ]


def _calibration_from_other_runs(results: dict[str, Any]) -> list[str]:
    """A note per commit named by a densitywatch entry's `calibration_commit`: its calibration
    metrics were merged in from another run of the same splits (e.g. a protocol-1 run, whose
    one model was fitted as this protocol's second, calibrated one)."""
    entries = {name: entry.get("densitywatch", {}) for name, entry in results.items()}
    return [
        f"densitywatch's n_calib, fpr_at_1pct and recall_at_1pct merged from a run of the same "
        f"splits at commit {c} whose model was fitted, calibrated and scored as this protocol's "
        f"second model: {', '.join(names)}."
        for c, names in _differing(entries, "calibration_commit", None, missing=None).items()
    ]


def _differing(results: dict[str, Any], key: str, current: Any, missing: Any) -> dict[Any, list]:
    """Dataset names by their entry's `key` (`missing` where absent), for values other than
    `current`, in sorted order of value."""
    groups: dict[Any, list[str]] = {}
    for name, entry in results.items():
        value = entry.get(key, missing)
        if value != current:
            groups.setdefault(value, []).append(name)
    return dict(sorted(groups.items()))


def run_dataset(
    ds: Dataset,
    seeds: int,
    methods: list[str],
    options: MethodOptions,
    max_rows: int | None,
    bar: tqdm,
    done: dict[str, list[dict[str, Any]]] | None = None,
    save: Callable[[dict[str, list[dict[str, Any]]]], None] | None = None,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """All methods on all seeds of one dataset: the aggregated entry and the per-seed records.
    Records in `done` (per method, by seed) are kept rather than recomputed; `save` gets the
    records after each new one, so an interrupted run loses one fit at most."""
    x, y = load(ds.path)
    per_seed: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    kept = done or {}
    for seed in range(seeds):
        split: Split | None = None
        for m in methods:
            bar.set_postfix_str(f"{ds.name} seed {seed} {m}")
            if len(kept.get(m, [])) > seed:
                per_seed[m].append(kept[m][seed])
            else:
                split = split or make_split(x, y, seed, max_rows)
                per_seed[m].append(seed_record(runner(m)(split, options), split))
                if save:
                    save(per_seed)
            bar.update(1)
    entry: dict[str, Any] = {m: aggregate(per_seed[m], x.shape[1]) for m in methods}
    kinds = column_kinds(x)
    for m in DENSITY_METHODS:
        if m in entry:
            entry[m].update(kinds)
    return entry, per_seed


def column_kinds(x: np.ndarray) -> dict[str, int]:
    """How many columns are integer-valued, and how many densitywatch's schema inference (on
    the whole dataset) makes categorical or gives an atom: where a density and a probability
    mass meet, test NLLs are not on one measure.

    >>> x = np.column_stack([np.arange(40.0) % 3, np.r_[np.zeros(10), np.linspace(1, 2, 30)],
    ...                      np.linspace(-1, 1, 40) ** 3])
    >>> column_kinds(x)
    {'n_integer_features': 1, 'n_categorical_features': 1, 'n_atom_features': 1}
    """
    from densitywatch.training.schema import InferenceOptions, infer_schema_from_matrix

    features = infer_schema_from_matrix(x, options=InferenceOptions(constant="categorical"))
    return {
        "n_integer_features": int(np.sum(np.all(x == np.round(x), axis=0))),
        "n_categorical_features": sum(f.kind == "categorical" for f in features.features),
        "n_atom_features": sum(f.atom is not None for f in features.features),
    }


SAME_MEASURE_KEYS = ("n_integer_features", "n_categorical_features", "n_atom_features")


def same_measure(entry: dict[str, Any]) -> bool:
    """Whether every column of a dataset is modelled as a density by densitywatch and the
    flows alike (no integer, categorical or atom column), so their test NLLs compare."""
    dw = entry.get("densitywatch", {})
    return all(dw.get(k) == 0 for k in SAME_MEASURE_KEYS)


MERGE_OPTIONS = ("merge", "out", "no_progress")


def _check_merge_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--merge reads the configuration from the shards' files: refuse options that would
    suggest otherwise."""
    given = [
        "--" + k.replace("_", "-")
        for k, v in vars(args).items()
        if k not in MERGE_OPTIONS and v != parser.get_default(k)
    ]
    if given:
        raise HarnessError(
            f"--merge takes no option but --out (got {', '.join(given)}): the shards' result "
            "files hold their configuration"
        )


def _run_with_threads(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    if any(m in TORCH_METHODS for m in args.methods):
        import torch

        torch.set_num_threads(max(1, args.threads))
    with threadpool_limits(limits=max(1, args.threads)):
        return run(args, command)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    command = command_line(MODULE, argv)
    try:
        if args.merge:
            _check_merge_options(parser, args)
            result = merge(args.merge, Path(args.out), command)
        else:
            result = _run_with_threads(args, command)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = result_stem(pool_of(result), None if args.merge else args.shard)
    out = Path(args.out)
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")
    for m, s in result["summary"].items():
        print(f"  {m:>12}: ROC-AUC {_fmt(s['mean_roc_auc'])}  PR-AUC {_fmt(s['mean_pr_auc'])}")
    return 0
