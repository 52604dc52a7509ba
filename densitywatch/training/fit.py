"""Maximum-likelihood training: mini-batch Adam, early stopping on validation NLL, and
capacity selection (width, mixture size, ensemble size, weight decay) by validation NLL.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from densitywatch.density.artifact import Manifest, TrainingInfo
from densitywatch.density.model import ArchitectureSpec, DensityModel, weight_count
from densitywatch.density.schema import Schema


class Capacity(BaseModel):
    """One capacity candidate."""

    hidden_width: int
    n_components: int
    n_orderings: int = 1
    weight_decay: float = 0.0
    shared_weights: bool = False
    spread_degrees: bool = False

    def architecture(self) -> ArchitectureSpec:
        return ArchitectureSpec(
            hidden_width=self.hidden_width,
            n_components=self.n_components,
            n_orderings=self.n_orderings,
            shared_weights=self.shared_weights,
            spread_degrees=self.spread_degrees,
        )


class FitConfig(BaseModel):
    """Training hyperparameters; `capacities` None means the size-dependent default grid."""

    val_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share held out for validation."
    )
    batch_size: int | None = Field(default=None, description="None: scaled with the data size.")
    learning_rate: float = Field(default=3e-3, gt=0)
    max_epochs: int = Field(default=300, ge=1)
    max_steps: int | None = Field(
        default=None, ge=1, description="Cap on gradient steps per candidate; None: by data size."
    )
    patience: int = Field(
        default=12, ge=1, description="Epochs without improvement before stopping."
    )
    seed: int = 0
    device: str = "cpu"
    capacities: list[Capacity] | None = None
    final_orderings: int | None = Field(
        default=None, description="Ensemble size of the final model; None: the candidate's."
    )
    refit: bool = Field(
        default=True,
        description="After selection, retrain the chosen capacity on train + validation for "
        "its best epoch count (as the GMM peer and scikit-learn's searches refit).",
    )
    show_progress: bool = True
    half_precision: bool = Field(
        default=True,
        description="Round the fitted model's parameters to float16 values, so its artifact "
        "stores them in half the bytes, losslessly; log p moves by 1e-4 to 1e-1 nats per "
        "point (docs/model.md).",
    )


# Size bands of training rows: the capacity grid and the step budget both follow them.
SMALL_STREAM_ROWS = 2_000  # below: small
LARGE_STREAM_ROWS = 20_000  # from here: large; between: medium
# Gradient steps per candidate (`default_max_steps`).
SMALL_STREAM_STEPS = 2_000
MEDIUM_STREAM_STEPS = 3_000
LARGE_STREAM_EPOCHS = 40
LARGE_STREAM_MIN_STEPS = 1_500
LARGE_STREAM_MAX_STEPS = 5_000
# Weight budgets (`max_weights`), in weights before masking: an artifact stores about half of
# them (the masks' ones) at 2 bytes each, so a small stream's stays near 1.3 MB.
SMALL_STREAM_MAX_WEIGHTS = 1_250_000
MAX_WEIGHTS = 3_000_000
MIN_WIDTH = 8


def default_capacities(n_train: int, schema: Schema) -> list[Capacity]:
    """A small grid sized to the data, each candidate shrunk to the stream's weight budget.

    Every candidate is an ensemble of orderings: on anomaly-detection data the mixture over
    orderings is consistently better than a single ordering of the same total size. Small
    streams (under 2k rows) start from 20 orderings of a narrow, regularised network and of
    a wider one; medium streams (2k to 20k rows) from 6 orderings and a 256-unit candidate;
    large streams from one mid-sized candidate. `within_budget` then cuts each to
    `max_weights(n_train)`: it is the output layer (width × units per feature) that grows
    with the features, so on wide data the ensemble shrinks first. The evidence for each
    choice is in docs/benchmarks.md.
    """
    if n_train < SMALL_STREAM_ROWS:
        templates = [
            Capacity(hidden_width=32, n_components=3, n_orderings=20, weight_decay=1e-3),
            Capacity(hidden_width=96, n_components=5, n_orderings=20, weight_decay=1e-4),
        ]
    elif n_train < LARGE_STREAM_ROWS:
        templates = [
            Capacity(hidden_width=64, n_components=5, n_orderings=6, weight_decay=1e-4),
            Capacity(hidden_width=256, n_components=8, n_orderings=6, weight_decay=1e-5),
        ]
    else:
        templates = [Capacity(hidden_width=192, n_components=6, n_orderings=2, weight_decay=1e-6)]
    budget = max_weights(n_train)
    shrunk = [within_budget(c, schema, budget) for c in templates]
    return [c for i, c in enumerate(shrunk) if c not in shrunk[:i]]


def max_weights(n_train: int) -> int:
    """The weight budget of a stream of n_train rows (float32: 4 bytes each on disk)."""
    return SMALL_STREAM_MAX_WEIGHTS if n_train < SMALL_STREAM_ROWS else MAX_WEIGHTS


def within_budget(capacity: Capacity, schema: Schema, budget: int) -> Capacity:
    """The candidate cut to at most `budget` weights: fewer orderings first, then fewer
    mixture components, then narrower layers (never below MIN_WIDTH units).

    Example:
        >>> from densitywatch.density.schema import FeatureSpec
        >>> schema = Schema(features=[FeatureSpec(name=f"x{i}") for i in range(30)])
        >>> c = Capacity(hidden_width=96, n_components=5, n_orderings=20)
        >>> within_budget(c, schema, 250_000).n_orderings
        4
        >>> wide = Schema(features=[FeatureSpec(name=f"x{i}") for i in range(1555)])
        >>> cut = within_budget(c, wide, 250_000)
        >>> cut.n_orderings, cut.n_components, cut.hidden_width
        (1, 1, 24)
    """

    def count(c: Capacity) -> int:
        return weight_count(schema, c.architecture())

    if count(capacity) <= budget:
        return capacity
    one = capacity.model_copy(update={"n_orderings": 1})
    if not capacity.shared_weights and count(one) <= budget:
        return capacity.model_copy(update={"n_orderings": budget // count(one)})
    c = capacity if capacity.shared_weights else one
    while count(c) > budget and c.n_components > 1:
        c = c.model_copy(update={"n_components": c.n_components // 2})
    while count(c) > budget and c.hidden_width > MIN_WIDTH:
        c = c.model_copy(update={"hidden_width": max(MIN_WIDTH, c.hidden_width // 2)})
    return c


def default_max_steps(n_train: int, batch_size: int) -> int:
    """Gradient steps per candidate: enough to converge, bounded for large streams.

    From 2k to 20k rows the batch grows with the data, so 3 000 steps are 75 to 95 epochs
    (at 1 500, no candidate on any medium ADBench stream stopped early: all ran out of
    budget; doubling it improved validation NLL on 5 of 6). Beyond, the batch stays at 1 024
    rows and a fixed step count would mean ever fewer passes (a 62k-row stream got 24 and was
    still improving on validation NLL when stopped): large streams get 40 epochs, within
    5 000 steps (about 100 s on one core).
    """
    if n_train < SMALL_STREAM_ROWS:
        return SMALL_STREAM_STEPS
    if n_train < LARGE_STREAM_ROWS:
        return MEDIUM_STREAM_STEPS
    epochs = LARGE_STREAM_EPOCHS * math.ceil(n_train / batch_size)
    return min(LARGE_STREAM_MAX_STEPS, max(LARGE_STREAM_MIN_STEPS, epochs))


def default_batch_size(n_train: int) -> int:
    return int(min(1024, max(64, 2 ** round(math.log2(max(n_train, 1) / 40)))))


@dataclass
class FitResult:
    """The selected, fitted model and what happened on the way."""

    model: DensityModel
    capacity: Capacity
    train_nll: float
    val_nll: float
    epochs: int
    duration_s: float
    n_train: int
    n_val: int
    candidates: list[dict[str, float | int]] = field(default_factory=list)
    refit_epochs: int | None = None  # None: the selected candidate itself is the model

    def training_info(self, data_fingerprint: str, seed: int, **extra: Any) -> TrainingInfo:
        """The manifest's record of this fit; `extra` sets TrainingInfo's optional fields."""
        return TrainingInfo(
            train_nll=self.train_nll,
            val_nll=self.val_nll,
            n_train=self.n_train,
            n_val=self.n_val,
            epochs=self.epochs,
            duration_s=self.duration_s,
            seed=seed,
            data_fingerprint=data_fingerprint,
            candidates=[dict(c) for c in self.candidates],
            refit_epochs=self.refit_epochs,
            **extra,
        )

    def manifest(self, stream: str, training: TrainingInfo) -> Manifest:
        """The manifest of a new version of `stream` holding this fit's model."""
        return Manifest(
            stream=stream,
            feature_schema=self.model.schema,
            architecture=self.model.architecture,
            training=training,
        )


def mean_nll(model: DensityModel, x: torch.Tensor, batch: int = 8192) -> float:
    """Mean negative log-likelihood (nats per point) under eval mode."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            total -= float(model.log_prob(x[start : start + batch]).total.sum())
    model.train(was_training)
    return total / max(len(x), 1)


def split(x: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split (at least one validation row)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = max(1, round(len(x) * val_fraction))
    return x[order[n_val:]], x[order[:n_val]]


def _train_one(
    model: DensityModel,
    train: torch.Tensor,
    val: torch.Tensor,
    capacity: Capacity,
    config: FitConfig,
    progress: Callable[[int, float], None],
) -> tuple[float, int, int]:
    """Train in place with early stopping; restores the best state.

    Returns (best validation NLL, epochs run, epoch of the best state)."""
    schedule = _Schedule.of(len(train), config)
    best, best_epoch, stale, epoch = math.inf, 0, 0, 0
    best_state = copy.deepcopy(model.state_dict())
    for epoch, _ in enumerate(_epochs(model, train, capacity, config, schedule), start=1):
        val_nll = mean_nll(model, val)
        progress(epoch, val_nll)
        if val_nll < best - 1e-4:
            best, best_epoch, stale = val_nll, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    return best, epoch, max(best_epoch, 1)


def _refit(
    model: DensityModel,
    data: torch.Tensor,
    capacity: Capacity,
    config: FitConfig,
    schedule: _Schedule,
    epochs: int,
) -> None:
    """Train a fresh model on train + validation for the selected candidate's best epoch
    count, on the candidate's learning-rate schedule (no held-out data left to stop on)."""
    for epoch, _ in enumerate(_epochs(model, data, capacity, config, schedule), start=1):
        if epoch >= epochs:
            break


@dataclass(frozen=True)
class _Schedule:
    """Batch size and epoch budget of a candidate, from its training split's size."""

    batch: int
    max_epochs: int

    @classmethod
    def of(cls, n_train: int, config: FitConfig) -> _Schedule:
        batch = config.batch_size or default_batch_size(n_train)
        steps_per_epoch = max(1, math.ceil(n_train / batch))
        max_steps = config.max_steps or default_max_steps(n_train, batch)
        return cls(batch, min(config.max_epochs, max(1, max_steps // steps_per_epoch)))


def _epochs(
    model: DensityModel,
    data: torch.Tensor,
    capacity: Capacity,
    config: FitConfig,
    schedule: _Schedule,
) -> Iterator[None]:
    """Mini-batch AdamW with a cosine schedule; yields after each epoch (up to max_epochs)."""
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=capacity.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=schedule.max_epochs)
    batch = schedule.batch
    for _ in range(schedule.max_epochs):
        model.train()
        perm = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), batch):
            xb = data[perm[start : start + batch]]
            loss = -model.member_terms(xb).sum(dim=-1).mean()  # members trained independently
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimiser.step()
        scheduler.step()
        yield None


def fit(
    schema: Schema,
    x: np.ndarray,
    config: FitConfig | None = None,
    *,
    description: str = "train",
) -> FitResult:
    """Fit a density model to encoded records x (n, D), selecting capacity by validation NLL."""
    config = config or FitConfig()
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    x_train, x_val = split(np.asarray(x, dtype=np.float64), config.val_fraction, config.seed)
    device = torch.device(config.device)
    train = torch.from_numpy(x_train).to(device)
    val = torch.from_numpy(x_val).to(device)
    capacities = config.capacities or default_capacities(len(train), schema)
    if config.final_orderings is not None:
        capacities = [
            c.model_copy(update={"n_orderings": config.final_orderings}) for c in capacities
        ]
    results: list[tuple[float, int, int, Capacity, DensityModel]] = []
    candidates: list[dict[str, float | int]] = []
    with tqdm(
        total=len(capacities) + config.refit,
        desc=description,
        unit="fit",
        disable=not config.show_progress,
    ) as bar:
        for capacity in capacities:
            model = DensityModel(schema, capacity.architecture(), seed=config.seed).to(device)

            def progress(epoch: int, val_nll: float, width: int = capacity.hidden_width) -> None:
                # Redrawn at most every `mininterval`, not per epoch: a forced redraw per
                # epoch writes a line per epoch to a log that is not a terminal.
                bar.set_postfix(width=width, epoch=epoch, val_nll=f"{val_nll:.3f}", refresh=False)
                bar.update(0)

            val_nll, epochs, best_epoch = _train_one(model, train, val, capacity, config, progress)
            candidates.append({**capacity.model_dump(), "val_nll": val_nll, "epochs": epochs})
            results.append((val_nll, epochs, best_epoch, capacity, model))
            bar.update(1)
        val_nll, epochs, best_epoch, capacity, model = min(results, key=lambda r: r[0])
        refit_epochs, fitted_on = None, train
        if config.refit:
            bar.set_postfix(width=capacity.hidden_width, refit_epochs=best_epoch, refresh=False)
            model = DensityModel(schema, capacity.architecture(), seed=config.seed).to(device)
            fitted_on, refit_epochs = torch.cat([train, val]), best_epoch
            schedule = _Schedule.of(len(train), config)
            _refit(model, fitted_on, capacity, config, schedule, best_epoch)
            bar.update(1)
    model = model.cpu().eval()
    if config.half_precision:
        model.round_to_half_()
    return FitResult(
        model=model,
        capacity=capacity,
        train_nll=mean_nll(model, fitted_on.cpu()),
        val_nll=val_nll,
        epochs=epochs,
        duration_s=time.perf_counter() - start,
        n_train=len(train),
        n_val=len(val),
        candidates=candidates,
        refit_epochs=refit_epochs,
    )
