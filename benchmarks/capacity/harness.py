"""Capacity rules compared where a density researcher decides them: held-out NLL of fit data.

For each dataset and seed, the detection benchmark's fit half (same split, same shuffle, same
schema inference as its densitywatch method) is cut once more: 80% goes to `fit` (which holds
out its own 20% for early stopping and selection), 20% is held out. A rule is a list of
capacity candidates; its figure is the held-out NLL of the candidate `fit` would select (the
lowest validation NLL), its cost the summed training time of its candidates and the weight
count of the one selected. Test rows and labels are never read, so nothing here can tune on
what the detection benchmark scores.

A spec suffix `+aF` fits with atoms (`InferenceOptions.atom_fraction=F`; without it a rule
fits without atoms, whatever the library's default, so a committed command means the same
at every commit); `+s` spreads hidden degrees (`ArchitectureSpec.spread_degrees`); `+f32`
keeps the fitted parameters in float32 (`FitConfig.half_precision=False`). Densities with and
without atoms are compared on one reference measure (`held_out_mixed_nll_per_dim`): the
atoms that inference finds at `REFERENCE_ATOM_FRACTION` on the fit rows count as points,
everything else as Lebesgue measure. On a reference atom, a model with that atom gives
log P(atom); a model without it gives the log mass its density puts on a window around the
atom (half the gap to the nearest other fit value each side), not an unbounded density spike.
The reference flows have no such term and report the plain NLL only.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    command_line,
    commands_markdown,
    git_commit,
    machine_info,
    write_results,
)
from benchmarks.detection.harness import (
    DEFAULT_DATA,
    DEFAULT_POOL,
    POOLS,
    HarnessError,
    find_datasets,
    load,
    make_split,
    select,
)

MODULE = "benchmarks.capacity"
HELD_OUT = 0.2
DEFAULT_RULE = "default"  # the library's own `default_capacities`
# Reference densities, fitted as the detection benchmark fits them (zuko, standardised inputs,
# log p in raw units): the anchors a capacity rule's held-out NLL is read against.
FLOW_SPECS = ("maf", "nsf")
REFERENCE_ATOM_FRACTION = 0.05
ATOMS = re.compile(r"^a([0-9]*\.?[0-9]+)$")
ISOLATION = re.compile(r"^i([0-9]*\.?[0-9]+)$")
SPEC = re.compile(r"^w(\d+)k(\d+)e(\d+)(?:d([0-9.]+(?:e-?\d+)?))?(?:@(\d+)(k?))?$")


@dataclass(frozen=True)
class Task:
    dataset: str
    path: Path
    seed: int
    spec: str
    max_rows: int | None
    threads: int


@dataclass(frozen=True)
class Variant:
    """A spec's suffixes: `+aF` fits with atoms at fraction F, `+f32` keeps float32
    parameters (no rounding to float16 values), `+s` spreads hidden degrees over all
    positions (`ArchitectureSpec.spread_degrees`), `+iR` keeps only atoms holding R times
    the rows of the next most frequent value (`InferenceOptions.atom_isolation`)."""

    spec: str
    atom_fraction: float | None = None
    half_precision: bool = True
    spread_degrees: bool = False
    atom_isolation: float | None = None


def split_variant(spec: str) -> Variant:
    """`w8k2e3+a0.05+f32` -> the capacity spec and its suffixes.

    >>> split_variant("default+a0.1+f32")  # doctest: +NORMALIZE_WHITESPACE
    Variant(spec='default', atom_fraction=0.1, half_precision=False, spread_degrees=False,
            atom_isolation=None)
    >>> split_variant("w8k2e3+s+a0.05+i5")  # doctest: +NORMALIZE_WHITESPACE
    Variant(spec='w8k2e3', atom_fraction=0.05, half_precision=True, spread_degrees=True,
            atom_isolation=5.0)
    """
    base, *suffixes = spec.split("+")
    fraction, half, spread, isolation = None, True, False, None
    for suffix in suffixes:
        if suffix == "f32":
            half = False
        elif suffix == "s":
            spread = True
        elif (ratio := ISOLATION.match(suffix)) and float(ratio.group(1)) >= 1:
            isolation = float(ratio.group(1))
        elif (match := ATOMS.match(suffix)) and 0 < float(match.group(1)) <= 1:
            fraction = float(match.group(1))
        else:
            raise HarnessError(
                f"bad suffix +{suffix} in {spec!r}; expected +aF (0 < F <= 1), +iR (R >= 1), "
                "+f32 or +s"
            )
    return Variant(base, fraction, half, spread, isolation)


def parse_spec(spec: str) -> dict[str, Any]:
    """`w32k3e20d1e-3`: width 32, 3 components, 20 orderings, weight decay 1e-3.

    A suffix `@B` cuts the candidate to B weights with the library's `within_budget`
    (orderings first); `@Bk` halves the mixture components first (a variant to compare).

    >>> parse_spec("w32k3e20d1e-3")
    {'hidden_width': 32, 'n_components': 3, 'n_orderings': 20, 'weight_decay': 0.001}
    """
    match = SPEC.match(spec)
    if not match:
        raise HarnessError(f"bad capacity spec {spec!r}; expected e.g. w32k3e20d1e-3@250000")
    width, k, e, decay, _, _ = match.groups()
    return {
        "hidden_width": int(width),
        "n_components": int(k),
        "n_orderings": int(e),
        "weight_decay": float(decay) if decay else 0.0,
    }


def parse_rule(text: str) -> tuple[str, list[str]]:
    """`NAME=SPEC,SPEC...` or `default`."""
    name, _, specs = text.partition("=")
    if not specs:
        if name != DEFAULT_RULE:
            raise HarnessError(f"bad rule {text!r}; expected NAME=SPEC[,SPEC...] or default")
        return name, [DEFAULT_RULE]
    items = [s.strip() for s in specs.split(",") if s.strip()]
    for s in items:
        base = s if s in FLOW_SPECS else split_variant(s).spec
        if base != DEFAULT_RULE and base not in FLOW_SPECS:
            parse_spec(base)
    return name, items


def fit_data(path: Path, seed: int, max_rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The detection benchmark's fit half, cut into (fit rows, held-out rows)."""
    x, y = load(path)
    split = make_split(x, y, seed, max_rows)
    rng = np.random.default_rng([seed, 104729])  # the detection benchmark's own shuffle
    x_fit = split.x_fit[rng.permutation(len(split.x_fit))]
    n_held = max(1, round(len(x_fit) * HELD_OUT))
    return x_fit[n_held:], x_fit[:n_held]


def run_task(task: Task) -> dict[str, Any]:
    """Fit one candidate (or the default grid) and measure it on the held-out rows."""
    import torch

    from densitywatch.training.fit import FitConfig, default_capacities, fit, mean_nll, split
    from densitywatch.training.schema import InferenceOptions, infer_schema_from_matrix

    torch.set_num_threads(task.threads)
    x_train, x_held = fit_data(task.path, task.seed, task.max_rows)
    if task.spec in FLOW_SPECS:
        return run_flow_task(task, x_train, x_held)
    variant = split_variant(task.spec)
    options = InferenceOptions(
        constant="categorical",
        atom_fraction=variant.atom_fraction,
        atom_isolation=variant.atom_isolation,
    )
    schema = infer_schema_from_matrix(x_train, options=options)
    capacities = None if variant.spec == DEFAULT_RULE else [candidate(variant.spec, schema)]
    if variant.spread_degrees:
        n_fit = len(split(x_train, FitConfig().val_fraction, task.seed)[0])
        grid = capacities or default_capacities(n_fit, schema)
        capacities = [c.model_copy(update={"spread_degrees": True}) for c in grid]
    config = FitConfig(
        seed=task.seed,
        capacities=capacities,
        refit=False,
        show_progress=False,
        half_precision=variant.half_precision,
    )
    start = time.perf_counter()
    result = fit(schema, schema.encode(x_train), config)
    seconds = time.perf_counter() - start
    held = torch.from_numpy(schema.encode(x_held))
    d = x_train.shape[1]
    return {
        "dataset": task.dataset,
        "seed": task.seed,
        "spec": task.spec,
        "selected": _spec_of(result.capacity.model_dump()),
        "rows": len(x_train),
        "features": d,
        "val_nll": result.val_nll,
        "held_out_nll_per_dim": mean_nll(result.model, held) / d,
        "held_out_mixed_nll_per_dim": mixed_nll(
            result.model, held, x_held, reference_atoms(x_train)
        )
        / d,
        "atoms": sum(f.atom is not None for f in schema.features),
        "train_time_s": seconds,
        "epochs": result.epochs,
        "weights": sum(p.numel() for p in result.model.parameters()),
    }


def run_flow_task(task: Task, x_train: np.ndarray, x_held: np.ndarray) -> dict[str, Any]:
    """A reference flow on the same rows; its own 10% validation split stops it early."""
    from benchmarks.detection.methods import MethodOptions, Split, run_flow

    split = Split(x_fit=x_train, x_test=x_held, y_test=np.zeros(len(x_held)), seed=task.seed)
    run = run_flow(task.spec, split, MethodOptions())  # type: ignore[arg-type]
    assert run.log_p is not None and run.extra is not None
    d = x_train.shape[1]
    val = run.extra["val_nll_per_dim"]
    return {
        "dataset": task.dataset,
        "seed": task.seed,
        "spec": task.spec,
        "selected": task.spec,
        "rows": len(x_train),
        "features": d,
        "val_nll": float(val) * d if val is not None else math.inf,
        "held_out_nll_per_dim": float(-np.mean(run.log_p)) / d,
        "held_out_mixed_nll_per_dim": None,
        "atoms": 0,
        "train_time_s": run.train_time_s,
        "epochs": run.extra["epochs"],
        "weights": None,
    }


def reference_atoms(x_train: np.ndarray) -> dict[int, tuple[float, float]]:
    """Feature -> (atom, half window) of the reference measure's atoms.

    >>> x = np.concatenate([np.zeros(6), np.linspace(0.5, 3.0, 14)])[:, None]
    >>> reference_atoms(x)  # zeros are 30% of the rows; the nearest other value is 0.5
    {0: (0.0, 0.25)}
    """
    from densitywatch.training.schema import InferenceOptions, infer_schema_from_matrix

    options = InferenceOptions(constant="categorical", atom_fraction=REFERENCE_ATOM_FRACTION)
    atoms = {}
    for j, f in enumerate(infer_schema_from_matrix(x_train, options=options).features):
        if f.atom is not None:
            others = np.unique(x_train[:, j])
            others = others[others != f.atom]
            atoms[j] = (f.atom, float(np.min(np.abs(others - f.atom))) / 2)
    return atoms


def mixed_nll(
    model: Any, held: Any, x_held: np.ndarray, atoms: dict[int, tuple[float, float]]
) -> float:
    """Mean NLL (nats per point) on the reference measure: log P(atom) or a window's log mass
    on each reference atom, the density elsewhere; members combined as `log_prob` does."""
    import torch

    from densitywatch.density.schema import FeatureKind

    features = model.schema.features
    windowed = [
        j for j in atoms if features[j].kind == FeatureKind.CONTINUOUS and features[j].atom is None
    ]
    model.eval()
    with torch.no_grad():
        terms = model.member_terms(held)  # (E, n, D)
        if windowed:
            low = [atoms[j][0] - atoms[j][1] for j in windowed]
            high = [atoms[j][0] + atoms[j][1] for j in windowed]
            mass = model.member_interval_log_mass(held, windowed, low, high).to(terms.dtype)
            on = torch.from_numpy(np.stack([x_held[:, j] == atoms[j][0] for j in windowed], 1))
            terms[..., windowed] = torch.where(on, mass, terms[..., windowed])
        totals = terms.sum(dim=-1)
        log_p = torch.logsumexp(totals, dim=0) - math.log(totals.shape[0])
    return float(-log_p.mean())


def candidate(spec: str, schema: Any) -> Any:
    """The Capacity a spec names, cut to its budget when it has one."""
    from densitywatch.density.model import weight_count
    from densitywatch.training.fit import Capacity, within_budget

    match = SPEC.match(spec)
    assert match is not None
    c = Capacity(**parse_spec(spec))
    budget, components_first = match.group(5), match.group(6)
    if budget is None:
        return c
    if components_first:
        while c.n_components > 1 and weight_count(schema, c.architecture()) > int(budget):
            c = c.model_copy(update={"n_components": c.n_components // 2})
    return within_budget(c, schema, int(budget))


def _spec_of(c: dict[str, Any]) -> str:
    decay = f"d{c['weight_decay']:g}" if c["weight_decay"] else ""
    return f"w{c['hidden_width']}k{c['n_components']}e{c['n_orderings']}{decay}"


def rule_outcome(records: dict[str, dict[str, Any]], specs: Sequence[str]) -> dict[str, Any]:
    """What `fit` with this rule's candidates would have returned: the lowest val NLL."""
    runs = [records[s] for s in specs]
    best = min(runs, key=lambda r: r["val_nll"])
    return {
        "selected": best["selected"],
        "held_out_nll_per_dim": best["held_out_nll_per_dim"],
        "held_out_mixed_nll_per_dim": best.get("held_out_mixed_nll_per_dim"),
        "train_time_s": sum(r["train_time_s"] for r in runs),
        "weights": best["weights"],
    }


def summarise(records: list[dict[str, Any]], rules: dict[str, list[str]]) -> dict[str, Any]:
    by_key: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        by_key.setdefault((r["dataset"], r["seed"]), {})[r["spec"]] = r
    datasets: dict[str, dict[str, Any]] = {}
    for (name, seed), recs in sorted(by_key.items()):
        entry = datasets.setdefault(name, {"seeds": {}})
        entry["seeds"][str(seed)] = {rule: rule_outcome(recs, s) for rule, s in rules.items()}
    for entry in datasets.values():
        entry["rules"] = {rule: _mean_over_seeds(entry["seeds"], rule) for rule in rules}
    return {"datasets": datasets, "rules": _rule_summary(datasets, list(rules))}


def _mean_over_seeds(seeds: dict[str, dict[str, Any]], rule: str) -> dict[str, Any]:
    outs = [s[rule] for s in seeds.values()]
    weights = [o["weights"] for o in outs if o["weights"] is not None]
    mixed = [o.get("held_out_mixed_nll_per_dim") for o in outs]
    return {
        "held_out_nll_per_dim": statistics.fmean(o["held_out_nll_per_dim"] for o in outs),
        "held_out_mixed_nll_per_dim": None if None in mixed else statistics.fmean(mixed),  # type: ignore[arg-type]
        "train_time_s": statistics.fmean(o["train_time_s"] for o in outs),
        "weights": statistics.fmean(weights) if weights else None,  # None: a reference flow
        "selected": sorted({o["selected"] for o in outs}),
    }


def _rule_summary(datasets: dict[str, Any], rules: list[str]) -> dict[str, Any]:
    """Each rule against the first: paired differences per dataset, and what it costs.

    Differences are read on the reference measure when both rules have it (any two
    densitywatch rules, atoms or not), else on the plain NLL (a reference flow)."""
    base = rules[0]
    summary = {}
    for rule in rules:
        diffs, noisy, measures = [], 0, set()
        for entry in datasets.values():
            per_seed = []
            for s in entry["seeds"].values():
                key = _common_measure(s[rule], s[base])
                measures.add(key)
                per_seed.append(s[rule][key] - s[base][key])
            diffs.append(statistics.fmean(per_seed))
            spread = statistics.stdev(per_seed) if len(per_seed) > 1 else math.inf
            noisy += abs(diffs[-1]) <= spread
        means = [e["rules"][rule] for e in datasets.values()]
        mixed = [m["held_out_mixed_nll_per_dim"] for m in means]
        summary[rule] = {
            "against": base,
            "measure": "mixed" if measures == {MIXED} else "plain",
            "better": sum(d < 0 for d in diffs),
            "worse": sum(d > 0 for d in diffs),
            "within_seed_spread": noisy,
            "mean_diff_nll_per_dim": statistics.fmean(diffs),
            "mean_held_out_nll_per_dim": statistics.fmean(m["held_out_nll_per_dim"] for m in means),
            "mean_held_out_mixed_nll_per_dim": None if None in mixed else statistics.fmean(mixed),
            "mean_train_time_s": statistics.fmean(m["train_time_s"] for m in means),
            "max_weights": max((m["weights"] or 0 for m in means), default=0) or None,
        }
    return summary


MIXED = "held_out_mixed_nll_per_dim"


def _common_measure(a: dict[str, Any], b: dict[str, Any]) -> str:
    return (
        MIXED if a.get(MIXED) is not None and b.get(MIXED) is not None else "held_out_nll_per_dim"
    )


def markdown(result: dict[str, Any]) -> str:
    lines = [*cost_markdown(result["cost"]), ""] if result["cost"] else []
    if result["summary"]:
        lines += rules_markdown(result)
    return "\n".join([*lines, *commands_markdown([result["command"]])]) + "\n"


def rules_markdown(result: dict[str, Any]) -> list[str]:
    rules = list(result["config"]["rules"])
    lines = [
        "# Capacity rules: held-out NLL per dimension of the fit data (lower is better)",
        "",
        f"Pool `{result['config']['pool']}`, seeds {result['config']['seeds']}, commit "
        f"`{result['commit']}`. Rules: "
        + "; ".join(f"`{r}` = {', '.join(s)}" for r, s in result["config"]["rules"].items())
        + ".",
        "",
        "| rule | better / worse than `" + rules[0] + "` | within seed spread | mean Δ NLL/d "
        "(measure) | mean NLL/d | mean mixed NLL/d | mean train s | max weights |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rule, s in result["summary"]["rules"].items():
        lines.append(
            f"| {rule} | {s['better']} / {s['worse']} | {s['within_seed_spread']} | "
            f"{s['mean_diff_nll_per_dim']:+.4f} ({s['measure']}) | "
            f"{s['mean_held_out_nll_per_dim']:.4f} | "
            f"{_nll(s['mean_held_out_mixed_nll_per_dim'])} | "
            f"{s['mean_train_time_s']:.1f} | {_thousands(s['max_weights'])} |"
        )
    lines += [
        "",
        "Per dataset: NLL/d / mixed NLL/d (train time, weights; selected).",
        "",
        "| dataset | rows × features | " + " | ".join(rules) + " |",
    ]
    lines.append("|---|---:|" + "---:|" * len(rules))
    for name, entry in result["summary"]["datasets"].items():
        shape = result["shapes"][name]
        cells = [
            f"{m['held_out_nll_per_dim']:.3f} / {_nll(m['held_out_mixed_nll_per_dim'])} "
            f"({m['train_time_s']:.0f} s, "
            f"{_thousands(m['weights'], 1e3)}; {'/'.join(m['selected'])})"
            for m in (entry["rules"][r] for r in rules)
        ]
        lines.append(f"| {name} | {shape} | " + " | ".join(cells) + " |")
    return [*lines, ""]


# Synthetic streams whose default fit the cost section times: the demo's `cells` size, the
# widest tabular case the issue names, and the large-stream case of the training-speed goal.
COST_SHAPES: tuple[tuple[int, int], ...] = ((257, 30), (800, 1555), (50_000, 32))


def synthetic(rows: int, features: int, seed: int = 0) -> np.ndarray:
    """Correlated, non-Gaussian columns (as the detection benchmark's training-speed case)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(features, features)) / math.sqrt(features)
    return rng.normal(size=(rows, features)) @ mixing + np.sin(rng.normal(size=(rows, features)))


def parse_shape(text: str) -> tuple[int, int]:
    """`800x1555` -> (800, 1555)."""
    rows, _, features = text.partition("x")
    if not (rows.isdigit() and features.isdigit() and int(rows) > 1 and int(features) > 0):
        raise HarnessError(f"bad --cost-shape {text!r}; expected ROWSxFEATURES, e.g. 800x1555")
    return int(rows), int(features)


def cost(rows: int, features: int, threads: int) -> dict[str, Any]:
    """Wall time of `train`'s default fit (selection and refit) and the artifact it writes."""
    import tempfile

    import torch

    from densitywatch.density.artifact import ArtifactStore, fingerprint
    from densitywatch.training.fit import FitConfig, fit
    from densitywatch.training.schema import infer_schema_from_matrix

    torch.set_num_threads(threads)
    x = synthetic(rows, features)
    schema = infer_schema_from_matrix(x)
    start = time.perf_counter()
    result = fit(schema, schema.encode(x), FitConfig(show_progress=False))
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        manifest = result.manifest("s", result.training_info(fingerprint(x), seed=0))
        artifact = ArtifactStore(Path(tmp)).write(result.model, manifest)
        size = sum(f.stat().st_size for f in artifact.path.iterdir())
    return {
        "rows": rows,
        "features": features,
        "train_time_s": seconds,
        "weights": sum(p.numel() for p in result.model.parameters()),
        "artifact_bytes": size,
        "selected": _spec_of(result.capacity.model_dump()),
        "candidates": len(result.candidates),
        "epochs": result.epochs,
    }


def cost_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Cost of the default fit (synthetic streams, `train`'s path: selection and refit)",
        "",
        "| rows × features | train s | weights | artifact | selected | epochs |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rows']} × {r['features']} | {r['train_time_s']:.1f} | {r['weights']:,} | "
            f"{r['artifact_bytes'] / 1e6:.2f} MB | {r['selected']} | {r['epochs']} |"
        )
    return lines


def _nll(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _thousands(n: float | None, unit: float = 1.0) -> str:
    if n is None:
        return "–"
    return f"{n / unit:,.0f}" + (" k" if unit == 1e3 else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data folder (with pools)")
    p.add_argument("--pool", choices=sorted(POOLS), default=DEFAULT_POOL)
    p.add_argument("--datasets", nargs="*", help="names (default: every dataset of the pool)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    p.add_argument(
        "--rule",
        action="append",
        default=None,
        help="NAME=SPEC[,SPEC...] (SPEC like w32k3e20d1e-3, `default`, `maf`, `nsf`; suffixes: "
        "+aF fits with atoms at fraction F, +f32 keeps float32 parameters, +s spreads "
        "hidden degrees, +iR keeps isolated atoms only); the first rule "
        "is the baseline the others are compared with (default: `default` alone)",
    )
    p.add_argument("--max-rows", type=int, default=20_000, help="rows kept per dataset")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument(
        "--cost",
        action="store_true",
        help="also time the default fit on "
        + ", ".join(f"{r} × {f}" for r, f in COST_SHAPES)
        + " (synthetic)",
    )
    p.add_argument("--only-cost", action="store_true", help="the cost section alone")
    p.add_argument(
        "--cost-shape",
        action="append",
        help="ROWSxFEATURES to time instead of the defaults (implies --cost)",
    )
    p.add_argument("--name", default="capacity", help="result file stem")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return p


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    commit = git_commit()  # of the code that runs: HEAD may move while the fits do
    rules = dict(parse_rule(r) for r in (args.rule or [DEFAULT_RULE]))
    shapes = [parse_shape(t) for t in args.cost_shape] if args.cost_shape else COST_SHAPES
    wanted = args.cost or args.only_cost or args.cost_shape
    costs = [cost(r, f, args.threads) for r, f in shapes] if wanted else None
    datasets = [] if args.only_cost else select(find_datasets(args.data, args.pool), args.datasets)
    specs = sorted({s for ss in rules.values() for s in ss})
    tasks = [
        Task(d.name, d.path, seed, spec, args.max_rows, args.threads)
        for d in datasets
        for seed in range(args.seeds)
        for spec in specs
    ]
    records = _run_all(tasks, args.jobs)
    sizes = {r["dataset"]: f"{r['rows']} × {r['features']}" for r in records}
    return {
        "config": {
            "pool": args.pool,
            "seeds": args.seeds,
            "rules": rules,
            "max_rows": args.max_rows,
            "held_out": HELD_OUT,
            "threads": args.threads,
        },
        "shapes": sizes,
        "records": records,
        "summary": summarise(records, rules) if records else None,
        "cost": costs,
        "command": command,
        "commit": commit,
        "machine": machine_info(),
    }


def _run_all(tasks: list[Task], jobs: int) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    if jobs <= 1:
        return [run_task(t) for t in tqdm(tasks, desc="capacity", unit="fit")]
    # Longest first (more weights, more rows), so that the pool does not end on one straggler;
    # the bar counts fits as they finish.
    ordered = sorted(tasks, key=_expected_cost, reverse=True)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_task, t) for t in ordered]
        return [
            f.result() for f in tqdm(as_completed(futures), total=len(futures), desc="capacity")
        ]


def _expected_cost(task: Task) -> float:
    if task.spec in FLOW_SPECS:
        return 1e6
    spec = split_variant(task.spec).spec
    if spec == DEFAULT_RULE:
        return math.inf
    c = parse_spec(spec)
    return c["hidden_width"] * c["n_components"] * c["n_orderings"] / (1 + ("@" in spec))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        result = run(args, command_line(MODULE, argv))
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    json_path, md_path = write_results(args.name, result, markdown(result), args.out)
    print(f"wrote {json_path} and {md_path}")
    for c in result["cost"] or []:
        print(
            f"  {c['rows']} x {c['features']}: {c['train_time_s']:.1f} s, "
            f"{c['weights']:,} weights, {c['artifact_bytes'] / 1e6:.2f} MB"
        )
    for rule, s in (result["summary"] or {"rules": {}})["rules"].items():
        print(
            f"  {rule:>12}: NLL/d {s['mean_held_out_nll_per_dim']:.4f}  "
            f"mixed {_nll(s['mean_held_out_mixed_nll_per_dim'])}  "
            f"train {s['mean_train_time_s']:.1f} s  max weights {_thousands(s['max_weights'])}"
        )
    return 0
