"""The paper's toy experiment (Figs 2-4): why contrastive, similarity and relational losses differ.

The source representation is one or three clusters on the unit sphere in R^3. Each training pair
couples an input point, which tells its cluster, with a target drawn from that cluster at random.
How much of the target's offset inside its cluster the input reveals is a control,
``predictability``: the R^2 of the offset from the input (1: the input gives the exact target; 0:
only its cluster, the premise of the paper, the self-similarity of lidar). A small MLP maps inputs
to the sphere and is trained with each loss. Uniformity and tolerance of its outputs are recorded
over iterations (the paper's U-against-iterations figure, drawn for its 3-cluster setup) and
compared with the source's.

The paper's claims for the toy (:data:`PAPER_CLAIMS`, from the paper's captions as the project's
spec states them): contrastive ends with U above the source's, similarity with U below it and T
above it (outputs collapse to cluster means), relational with U closest to the source's. "Ends" is
judged on the mean over the last :data:`JUDGE_LAST` recorded iterations, not on one iteration.
:func:`run_toy_sweep` says how often they hold over seeds; :func:`run_predictability_sweep` maps
where the paper's ordering holds over predictability x iterations x setups.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import scipy.optimize
import scipy.stats
import torch
import torch.nn as nn
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.files import read_json, write_json
from relviz.losses import get_loss
from relviz.metrics import tolerance, uniformity
from relviz.stats import Interval
from relviz.tensors import one_thread

LOSS_NAMES = ("contrastive", "similarity", "relational")
TOY_FORMAT = 3  # 3: inputs set by predictability (R^2); U and T recorded on the record_every grid only
JUDGE_LAST = 5  # recorded iterations averaged to judge where a run "ends" (chosen before any sweep was run)

# The source of the paper's Fig 2 has U = 0.89 and T = 0.66; one spread cannot meet both. This is
# what calibrate_spread(0.89, 0.66, clusters=1, points=8000) returns over seeds 0-4: 0.4498, SD
# 0.0020. At 0.45 (8000 points, seeds 0-4) the source has U 0.885 +- 0.004 and T 0.651 +- 0.003.
PAPER_SOURCE = {"uniformity": 0.89, "tolerance": 0.66}
PAPER_SPREAD = 0.45

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: ``done`` of ``total`` training steps of the whole call are
finished and ``phase`` (a loss name; ``"seed 3 (2/5): relational"`` in a sweep) is running.
Called at every recorded iteration (every ``record_every`` steps) and at the end."""


@dataclass(frozen=True)
class ToyConfig:
    clusters: int = 1
    iters: int = 600
    batch: int = 256
    lr: float = 1e-2
    hidden: int = 64
    spread: float = PAPER_SPREAD  # angular spread of a source cluster (radians, roughly)
    input_spread: float = 0.5  # SD of a cluster's inputs around their centre, per coordinate
    predictability: float = 0.8  # R^2 of a target's offset in its cluster from the input (0: only the cluster)
    eval_points: int = 600
    record_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clusters not in (1, 3):
            raise InputError(f"clusters must be 1 or 3, got {self.clusters}")
        if self.iters < 1 or self.batch < 2:
            raise InputError(f"iters must be >= 1 and batch >= 2, got iters={self.iters}, batch={self.batch}")
        if not 0 < self.spread <= 3:
            raise InputError(f"spread must be in (0, 3] (radians, roughly), got {self.spread}")
        if not 0 <= self.predictability <= 1:
            raise InputError(f"predictability must be in [0, 1] (the R^2 of the target offset from the input), "
                             f"got {self.predictability}")
        if self.eval_points < 2 or self.record_every < 1:
            raise InputError(f"eval_points must be >= 2 and record_every >= 1, got eval_points={self.eval_points}, "
                             f"record_every={self.record_every}")


# name -> (what it is, the fields it sets); every other field keeps ToyConfig's default
SETUPS: dict[str, tuple[str, dict]] = {
    "paper-1cluster": ("the paper's Fig 2 source: one cluster with U near 0.89 and T near 0.66",
                       {"clusters": 1, "spread": PAPER_SPREAD}),
    "paper-3clusters": ("the paper's 3-cluster setup, the one of its U-against-iterations figure: three "
                        "clusters of the same spread, 120 degrees apart",
                        {"clusters": 3, "spread": PAPER_SPREAD}),
}


def toy_setup(name: str, **overrides) -> ToyConfig:
    """The config of a named setup (:data:`SETUPS`), with ``overrides`` (None values ignored)."""
    if name not in SETUPS:
        raise InputError(f"setup must be one of {', '.join(SETUPS)}, got {name!r}")
    return ToyConfig(**{**SETUPS[name][1], **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class ToyRun:
    """U and T over iterations for one loss (the history), with output snapshots [P, 3] for plotting."""

    loss: str
    iterations: list[int] = field(default_factory=list)
    uniformity: list[float] = field(default_factory=list)
    tolerance: list[float] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class ToyResult:
    config: ToyConfig
    source_uniformity: float
    source_tolerance: float
    source_points: torch.Tensor  # [P, 3]
    labels: torch.Tensor  # [P]
    runs: dict[str, ToyRun]

    def judged_iterations(self, last: int = JUDGE_LAST, at: int | None = None) -> list[int]:
        """The recorded iterations a summary averages: the last ``last`` of those in (0, ``at``]
        (``at``: a recorded iteration, default the end; fewer when fewer were recorded)."""
        at = self.config.iters if at is None else at
        recorded = next(iter(self.runs.values())).iterations
        if last < 1:
            raise InputError(f"last must be >= 1 recorded iterations, got {last}")
        if at < 1 or at not in recorded:
            raise InputError(f"at must be a recorded iteration after the start ({recorded[1:3]}, ...), got {at}")
        return [it for it in recorded if 0 < it <= at][-last:]

    def summary(self, last: int = JUDGE_LAST, at: int | None = None) -> dict[str, dict[str, float]]:
        """U and T per loss where its run ends, the mean over :meth:`judged_iterations` (one
        iteration is noisy: Adam at a constant learning rate keeps moving), and the source's."""
        window = self.judged_iterations(last, at)
        out = {"source": {"uniformity": self.source_uniformity, "tolerance": self.source_tolerance}}
        for name, run in self.runs.items():
            rows = [run.iterations.index(it) for it in window]
            out[name] = {"uniformity": statistics.fmean(run.uniformity[i] for i in rows),
                         "tolerance": statistics.fmean(run.tolerance[i] for i in rows)}
        return out

    def history(self) -> dict[str, dict[str, list]]:
        """U and T against iterations per loss: ``{loss: {iteration, uniformity, tolerance}}``."""
        return {name: {"iteration": r.iterations, "uniformity": r.uniformity, "tolerance": r.tolerance}
                for name, r in self.runs.items()}

    def to_json(self) -> dict:
        """The ``relviz toy --json`` output: config, the judged values and their iterations, the
        paper's claims, the history."""
        return {"config": asdict(self.config), **self.summary(), "judged_iterations": self.judged_iterations(),
                "paper_claims": paper_claims(self.summary()), "history": self.history()}

    def to_state(self) -> dict:
        """Everything, as plain JSON values (:meth:`from_state` inverts it exactly: float32 lists)."""
        return {"format": TOY_FORMAT, "config": asdict(self.config), "source_uniformity": self.source_uniformity,
                "source_tolerance": self.source_tolerance, "source_points": self.source_points.tolist(),
                "labels": self.labels.tolist(),
                "runs": {name: {"iterations": r.iterations, "uniformity": r.uniformity, "tolerance": r.tolerance,
                                "snapshots": {str(it): z.tolist() for it, z in r.snapshots.items()}}
                         for name, r in self.runs.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "ToyResult":
        runs = {name: ToyRun(loss=name, iterations=r["iterations"], uniformity=r["uniformity"],
                             tolerance=r["tolerance"],
                             snapshots={int(it): torch.tensor(z) for it, z in r["snapshots"].items()})
                for name, r in state["runs"].items()}
        return cls(config=ToyConfig(**state["config"]), source_uniformity=state["source_uniformity"],
                   source_tolerance=state["source_tolerance"], source_points=torch.tensor(state["source_points"]),
                   labels=torch.tensor(state["labels"]), runs=runs)


def _cluster_means(clusters: int) -> torch.Tensor:
    if clusters == 1:
        return torch.tensor([[0.0, 0.0, 1.0]])
    # three directions 120 degrees apart in azimuth, 30 degrees above the equator
    az = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    el = torch.full_like(az, math.radians(30))
    return torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], dim=1)


def sample_pairs(cfg: ToyConfig, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """n pairs: inputs [n, 3], targets [n, 3] on the sphere, cluster labels [n], offsets [n, 3].

    A target is its cluster mean plus ``spread`` times an offset u ~ N(0, I). The input is twice the
    cluster mean plus ``input_spread`` times sqrt(p) u + sqrt(1 - p) e, with e ~ N(0, I) and p the
    ``predictability``: inside a cluster each coordinate of u is revealed by its input coordinate
    with R^2 = p, and the input's spread does not depend on p.
    """
    means = _cluster_means(cfg.clusters)
    labels = torch.randint(0, cfg.clusters, (n,), generator=gen)
    offset = torch.randn(n, 3, generator=gen)
    targets = F.normalize(means[labels] + cfg.spread * offset, dim=1)
    noise = torch.randn(n, 3, generator=gen)
    revealed = math.sqrt(cfg.predictability) * offset + math.sqrt(1 - cfg.predictability) * noise
    inputs = 2.0 * means[labels] + cfg.input_spread * revealed
    return inputs, targets, labels, offset


def run_toy(cfg: ToyConfig = ToyConfig(), losses: tuple[str, ...] = LOSS_NAMES,
            snapshot_iters: tuple[int, ...] = (), progress: Progress | None = None) -> ToyResult:
    """Train one MLP per loss from the same initialisation and data; record U and T every
    ``record_every`` iterations and at the end (and outputs [P, 3] at ``snapshot_iters`` and the end).
    The data and the learning rate do not depend on ``iters``: a run's first k iterations are those
    of the same config run for k iterations."""
    if any(not 0 <= it <= cfg.iters for it in snapshot_iters):
        raise InputError(f"snapshot_iters must lie in [0, iters={cfg.iters}], got {sorted(snapshot_iters)}")
    with one_thread():  # tiny tensors: one thread, and numbers independent of the caller's count
        return _train(cfg, losses, snapshot_iters, progress)


def _train(cfg: ToyConfig, losses: tuple[str, ...], snapshot_iters: tuple[int, ...],
           progress: Progress | None) -> ToyResult:
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_inputs, eval_targets, eval_labels, _ = sample_pairs(cfg, cfg.eval_points, gen)
    batches = [sample_pairs(cfg, cfg.batch, gen)[:2] for _ in range(cfg.iters)]  # same data for every loss

    torch.manual_seed(cfg.seed)
    init = nn.Sequential(nn.Linear(3, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                         nn.Linear(cfg.hidden, 3))
    record = set(range(0, cfg.iters + 1, cfg.record_every)) | {cfg.iters}  # the history's grid
    snapshot = set(snapshot_iters) | {cfg.iters}  # outputs kept for plotting, not in the history

    runs = {}
    for k, name in enumerate(losses):
        loss_fn = get_loss(name)
        mlp = copy.deepcopy(init)
        opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
        run = ToyRun(loss=name)
        for it in range(cfg.iters + 1):
            if it in record or it in snapshot:
                with torch.no_grad():
                    out = F.normalize(mlp(eval_inputs), dim=1)
                if it in snapshot:
                    run.snapshots[it] = out.clone()
            if it in record:
                run.iterations.append(it)
                run.uniformity.append(uniformity(out))
                run.tolerance.append(_toy_tolerance(out, eval_labels))
                if progress is not None:
                    progress(name, k * cfg.iters + it, len(losses) * cfg.iters)
            if it == cfg.iters:
                break
            x, y = batches[it]
            loss = loss_fn(F.normalize(mlp(x), dim=1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        runs[name] = run
    return ToyResult(config=cfg, source_uniformity=uniformity(eval_targets),
                     source_tolerance=_toy_tolerance(eval_targets, eval_labels),
                     source_points=eval_targets, labels=eval_labels, runs=runs)


def _toy_tolerance(z: torch.Tensor, labels: torch.Tensor) -> float:
    return tolerance(z, labels).mean


def view_snapshots(iters: int) -> tuple[int, ...]:
    """The iterations whose outputs the app shows (start, early, a third, the end)."""
    return tuple(sorted({0, iters // 10, iters // 3, iters}))


def run_toy_cached(cfg: ToyConfig, cache_dir: str | Path, snapshot_iters: tuple[int, ...] = (),
                   losses: tuple[str, ...] = LOSS_NAMES, progress: Progress | None = None) -> ToyResult:
    """:func:`run_toy` with its result kept in ``<cache_dir>/toy/<key>.json``. The key is every input
    that decides the numbers (format, config, losses); the run is deterministic, so a stored result
    is the result. An entry without the asked snapshots, or a damaged one, is computed again (keeping
    the snapshots it had); ``progress`` is only called when something is computed."""
    key = json.dumps([TOY_FORMAT, asdict(cfg), list(losses)], sort_keys=True)
    path = Path(cache_dir) / "toy" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    state = read_json(path)
    stored: set[int] = set()
    if isinstance(state, dict) and state.get("format") == TOY_FORMAT:
        try:
            result = ToyResult.from_state(state)
            stored = set.intersection(*(set(r.snapshots) for r in result.runs.values()))
            if set(snapshot_iters) <= stored:
                return result
        except (KeyError, TypeError, ValueError):
            stored = set()  # not a whole result: run again
    result = run_toy(cfg, losses, tuple(sorted(stored | set(snapshot_iters))), progress)
    write_json(path, result.to_state())
    return result


# --------------------------------------------------------------------------- the paper's claims, over seeds

PAPER_CLAIMS: dict[str, str] = {
    "contrastive_U_above_source": "contrastive ends with U above the source's",
    "similarity_U_below_source": "similarity ends with U below the source's",
    "similarity_T_above_source": "similarity ends with T above the source's (outputs collapse to cluster means)",
    "relational_U_closest": "relational ends with U closest to the source's of the three losses",
}


ORDERING = ("contrastive_U_above_source", "similarity_U_below_source", "relational_U_closest")
COMBINED_CLAIMS: dict[str, str] = {
    "ordering": "the paper's U ordering: contrastive above the source, similarity below, relational closest",
    "all": "all four claims",
}
CLAIM_TEXT = {**PAPER_CLAIMS, **COMBINED_CLAIMS}


def paper_claims(summary: dict[str, dict[str, float]]) -> dict[str, bool]:
    """Which of :data:`PAPER_CLAIMS` hold in a :meth:`ToyResult.summary`, the paper's U
    ``ordering`` (the three U claims together) and ``all`` four."""
    src = summary["source"]
    gap = {name: abs(summary[name]["uniformity"] - src["uniformity"]) for name in LOSS_NAMES}
    out = {"contrastive_U_above_source": summary["contrastive"]["uniformity"] > src["uniformity"],
           "similarity_U_below_source": summary["similarity"]["uniformity"] < src["uniformity"],
           "similarity_T_above_source": summary["similarity"]["tolerance"] > src["tolerance"],
           "relational_U_closest": gap["relational"] < min(gap["contrastive"], gap["similarity"])}
    return {**out, "ordering": all(out[k] for k in ORDERING), "all": all(out.values())}


def proportion_interval(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """The rate successes / trials with its exact (Clopper-Pearson) interval."""
    ci = scipy.stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return Interval(successes / trials, float(ci.low), float(ci.high), confidence, "Clopper-Pearson", trials)


@dataclass
class ToySweep:
    """One config over several seeds: each seed's judged U and T (``summaries``, see
    :meth:`ToyResult.summary`) and which claims held."""

    config: ToyConfig  # its ``seed`` is the first seed's; its ``iters`` where the runs were judged
    seeds: list[int]
    summaries: list[dict[str, dict[str, float]]]

    @property
    def claims(self) -> list[dict[str, bool]]:
        return [paper_claims(s) for s in self.summaries]

    def rates(self, confidence: float = 0.95) -> dict[str, Interval]:
        """How often each claim (and ``ordering`` and ``all``) held over the seeds, with
        Clopper-Pearson intervals."""
        claims = self.claims
        return {name: proportion_interval(sum(c[name] for c in claims), len(claims), confidence)
                for name in CLAIM_TEXT}

    def rows(self) -> list[dict]:
        """One flat row per seed: final U and T per representation and the claims."""
        short = {"uniformity": "U", "tolerance": "T"}
        return [{"seed": seed, **{f"{k}_{short[m]}": x for k, v in s.items() for m, x in v.items()}, **c}
                for seed, s, c in zip(self.seeds, self.summaries, self.claims)]

    def to_json(self) -> dict:
        return {"config": asdict(self.config), "seeds": self.seeds, "claims": CLAIM_TEXT, "per_seed": self.rows(),
                "rates": {k: v.as_dict() for k, v in self.rates().items()}}


def run_toy_sweep(cfg: ToyConfig, seeds: Sequence[int], cache_dir: str | Path | None = None,
                  progress: Progress | None = None, snapshot_iters: tuple[int, ...] = ()) -> ToySweep:
    """:func:`run_toy` for each seed (``cfg`` with ``seed`` replaced; results kept in ``cache_dir``
    when one is given, with outputs at ``snapshot_iters`` so that a view of one seed finds them).
    ``progress`` counts steps over the whole sweep."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be one or more distinct integers, got {seeds}")
    per_run = len(LOSS_NAMES) * cfg.iters
    summaries = []
    for k, seed in enumerate(seeds):
        def report(phase: str, done: int, total: int, k: int = k, seed: int = seed) -> None:
            if progress is not None:
                progress(f"seed {seed} ({k + 1}/{len(seeds)}): {phase}", k * per_run + done, len(seeds) * per_run)

        one = replace(cfg, seed=seed)
        result = (run_toy(one, snapshot_iters=snapshot_iters, progress=report) if cache_dir is None
                  else run_toy_cached(one, cache_dir, snapshot_iters, progress=report))
        summaries.append(result.summary())
        report("done", per_run, per_run)
    return ToySweep(config=replace(cfg, seed=seeds[0]), seeds=seeds, summaries=summaries)


# --------------------------------------------------------------------------- where the ordering holds

PREDICTABILITIES = (1.0, 0.8, 0.5, 0.2, 0.0)  # R^2 of the target offset from the input; 0.8 is the default
SWEEP_HORIZONS = (100, 200, 400, 600, 1000, 1500)  # iterations at which runs are judged
SWEEP_SEEDS = 10


def cell_verdict(rate: Interval) -> str:
    """A cell's reading, fixed before any sweep was run: the ordering "holds" where the 95%
    Clopper-Pearson interval of its rate over seeds lies above one half (with 10 seeds: 9 or 10),
    "fails" where it lies below (0 or 1 of 10), and otherwise "cannot be told"."""
    if rate.low > 0.5:
        return "holds"
    if rate.high < 0.5:
        return "fails"
    return "cannot be told"


@dataclass
class PredictabilitySweep:
    """The paper's claims over setups x predictabilities x iterations, each cell over the same seeds.

    ``cells[(setup, predictability, iteration)]`` is a :class:`ToySweep` whose runs are judged on the
    last ``last`` recorded iterations up to ``iteration``. One run per (setup, predictability, seed)
    to the last horizon serves every horizon: its first k iterations are the run of k iterations."""

    setups: list[str]
    predictabilities: list[float]
    horizons: list[int]
    seeds: list[int]
    last: int
    cells: dict[tuple[str, float, int], ToySweep]

    def table(self, claim: str = "ordering", confidence: float = 0.95) -> list[dict]:
        """One row per cell: how many seeds gave ``claim`` (default the paper's U ordering), its
        Clopper-Pearson interval, the :func:`cell_verdict`, and the relational-closest count."""
        if claim not in CLAIM_TEXT:
            raise InputError(f"claim must be one of {', '.join(CLAIM_TEXT)}, got {claim!r}")
        rows = []
        for (setup, p, h), cell in self.cells.items():
            rates = cell.rates(confidence)
            rate, closest = rates[claim], rates["relational_U_closest"]
            rows.append({"setup": setup, "predictability": p, "iteration": h,
                         "held": round(rate.value * rate.n), "seeds": rate.n, "rate": rate.value, "low": rate.low,
                         "high": rate.high, "verdict": cell_verdict(rate),
                         "relational_closest": round(closest.value * closest.n)})
        return rows

    def to_json(self) -> dict:
        return {"setups": self.setups, "predictabilities": self.predictabilities, "horizons": self.horizons,
                "seeds": self.seeds, "last": self.last, "claims": CLAIM_TEXT, "table": self.table(),
                "cells": [{"setup": s, "predictability": p, "iteration": h, **cell.to_json()}
                          for (s, p, h), cell in self.cells.items()]}


def run_predictability_sweep(setups: dict[str, ToyConfig], predictabilities: Sequence[float] = PREDICTABILITIES,
                             horizons: Sequence[int] = SWEEP_HORIZONS, seeds: Sequence[int] = range(SWEEP_SEEDS),
                             last: int = JUDGE_LAST, cache_dir: str | Path | None = None,
                             progress: Progress | None = None) -> PredictabilitySweep:
    """Each setup (name -> config; its ``iters``, ``predictability`` and ``seed`` are replaced) at each
    predictability and seed, trained once to the last horizon and judged at every horizon.

    Horizons must be multiples of the configs' ``record_every`` (or the last horizon), so that a
    judged window is the same as a run of that length would record. ``progress`` counts steps over
    the whole sweep; results are kept in ``cache_dir`` when one is given."""
    seeds, horizons = [int(s) for s in seeds], sorted({int(h) for h in horizons})
    predictabilities = [float(p) for p in predictabilities]
    if not setups or not predictabilities or not seeds or not horizons:
        raise InputError("a sweep needs at least one setup, predictability, horizon and seed")
    if len(set(seeds)) != len(seeds) or len(set(predictabilities)) != len(predictabilities):
        raise InputError(f"seeds and predictabilities must be distinct, got {seeds} and {predictabilities}")
    top = horizons[-1]
    for name, cfg in setups.items():
        off_grid = [h for h in horizons[:-1] if h < 1 or h % cfg.record_every]
        if off_grid:
            raise InputError(f"horizons must be positive multiples of record_every={cfg.record_every} (setup "
                             f"{name!r}) or the last one, got {off_grid}")
    runs = [(name, p, seed) for name in setups for p in predictabilities for seed in seeds]
    per_run = len(LOSS_NAMES) * top
    judged: dict[tuple[str, float, int], list] = {}
    for k, (name, p, seed) in enumerate(runs):
        def report(phase: str, done: int, total: int, k: int = k, label: str = f"{name} R2={p:g} seed {seed}"):
            if progress is not None:
                progress(f"{label} ({k + 1}/{len(runs)}): {phase}", k * per_run + done, len(runs) * per_run)

        cfg = replace(setups[name], iters=top, predictability=p, seed=seed)
        result = run_toy(cfg, progress=report) if cache_dir is None else run_toy_cached(cfg, cache_dir,
                                                                                       progress=report)
        for h in horizons:
            judged.setdefault((name, p, h), []).append(result.summary(last, at=h))
        report("done", per_run, per_run)
    cells = {(name, p, h): ToySweep(replace(setups[name], iters=h, predictability=p, seed=seeds[0]), seeds, summaries)
             for (name, p, h), summaries in judged.items()}
    return PredictabilitySweep(list(setups), predictabilities, horizons, seeds, last, cells)


# --------------------------------------------------------------------------- calibrating the source

def source_structure(clusters: int, spread: float, points: int = 8000, seed: int = 0) -> tuple[float, float]:
    """(U, T) of ``points`` source points of a setup (the targets :func:`run_toy` draws)."""
    gen = torch.Generator().manual_seed(seed)
    _, targets, labels, _ = sample_pairs(ToyConfig(clusters=clusters, spread=spread), points, gen)
    with one_thread():  # tiny tensors: one thread, and numbers independent of the caller's count
        return uniformity(targets), _toy_tolerance(targets, labels)


def calibrate_spread(target_uniformity: float, target_tolerance: float, clusters: int = 1, points: int = 8000,
                     seed: int = 0) -> float:
    """The spread whose source comes nearest (U, T) = the targets in squared distance (scipy's
    bounded scalar minimisation over (0.05, 1.5)). One seed for every spread: the same offsets,
    scaled, so the objective is smooth in the spread."""
    def miss(spread: float) -> float:
        u, t = source_structure(clusters, spread, points, seed)
        return (u - target_uniformity) ** 2 + (t - target_tolerance) ** 2

    return float(scipy.optimize.minimize_scalar(miss, bounds=(0.05, 1.5), method="bounded",
                                                options={"xatol": 1e-4}).x)
