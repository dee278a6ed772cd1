"""The paper's toy experiment (Figs 2-4): why contrastive, similarity and relational losses differ.

The source representation is one or three clusters on the unit sphere in R^3. Each training pair
couples an input point, which tells its cluster, with a target drawn from that cluster at random:
the exact target inside the cluster cannot be predicted from the input (the self-similarity of
lidar). A small MLP maps inputs to the sphere and is trained with each loss. Uniformity and
tolerance of its outputs are recorded over iterations and compared with the source's.

Expected: contrastive ends more uniform than the source (it spreads points it cannot match),
similarity less uniform (outputs collapse to cluster means, tolerance rises), relational closest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from relviz.errors import InputError
from relviz.files import read_json, write_json
from relviz.losses import get_loss
from relviz.metrics import tolerance, uniformity

LOSS_NAMES = ("contrastive", "similarity", "relational")
TOY_FORMAT = 1


@dataclass(frozen=True)
class ToyConfig:
    clusters: int = 3
    iters: int = 600
    batch: int = 256
    lr: float = 1e-2
    hidden: int = 64
    spread: float = 0.35  # angular spread of a source cluster (radians, roughly)
    input_spread: float = 0.5  # scale of a cluster's inputs in input space
    unpredictable: float = 0.5  # input noise relative to the target offset it reveals
    eval_points: int = 600
    record_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clusters not in (1, 3):
            raise InputError(f"clusters must be 1 or 3, got {self.clusters}")
        if self.iters < 1 or self.batch < 2:
            raise InputError(f"iters must be >= 1 and batch >= 2, got iters={self.iters}, batch={self.batch}")


@dataclass
class ToyRun:
    """U and T over iterations for one loss, with output snapshots [P, 3] for plotting."""

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

    def summary(self) -> dict[str, dict[str, float]]:
        """Final U and T per loss and the source's (the ``relviz toy --json`` output)."""
        out = {"source": {"uniformity": self.source_uniformity, "tolerance": self.source_tolerance}}
        for name, run in self.runs.items():
            out[name] = {"uniformity": run.uniformity[-1], "tolerance": run.tolerance[-1]}
        return out

    def to_json(self) -> dict:
        return {"config": asdict(self.config), **self.summary()}

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


def _sample(cfg: ToyConfig, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n pairs: inputs [n, 3], targets [n, 3] on the sphere, cluster labels [n].

    A target is its cluster mean plus an offset u; the input sees the cluster and u only through
    noise of ``unpredictable`` times u's scale, so the target is partly unpredictable from the input.
    """
    means = _cluster_means(cfg.clusters)
    labels = torch.randint(0, cfg.clusters, (n,), generator=gen)
    offset = torch.randn(n, 3, generator=gen)
    targets = F.normalize(means[labels] + cfg.spread * offset, dim=1)
    noise = torch.randn(n, 3, generator=gen)
    inputs = 2.0 * means[labels] + cfg.input_spread * (offset + cfg.unpredictable * noise)
    return inputs, targets, labels


def run_toy(cfg: ToyConfig = ToyConfig(), losses: tuple[str, ...] = LOSS_NAMES,
            snapshot_iters: tuple[int, ...] = ()) -> ToyResult:
    """Train one MLP per loss from the same initialisation and data; record U and T."""
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_inputs, eval_targets, eval_labels = _sample(cfg, cfg.eval_points, gen)
    batches = [_sample(cfg, cfg.batch, gen)[:2] for _ in range(cfg.iters)]  # same data for every loss

    torch.manual_seed(cfg.seed)
    init = nn.Sequential(nn.Linear(3, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                         nn.Linear(cfg.hidden, 3))
    record = set(range(0, cfg.iters + 1, cfg.record_every)) | {cfg.iters} | set(snapshot_iters)

    runs = {}
    for name in losses:
        loss_fn = get_loss(name)
        mlp = copy.deepcopy(init)
        opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
        run = ToyRun(loss=name)
        for it in range(cfg.iters + 1):
            if it in record:
                with torch.no_grad():
                    out = F.normalize(mlp(eval_inputs), dim=1)
                run.iterations.append(it)
                run.uniformity.append(uniformity(out))
                run.tolerance.append(_toy_tolerance(out, eval_labels))
                if it in snapshot_iters or it == cfg.iters:
                    run.snapshots[it] = out.clone()
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


def run_toy_cached(cfg: ToyConfig, cache_dir: str | Path, snapshot_iters: tuple[int, ...] = ()) -> ToyResult:
    """:func:`run_toy` with its result kept in ``<cache_dir>/toy/<key>.json`` (the run is
    deterministic, so a stored result is the result); a damaged entry is recomputed."""
    key = json.dumps([TOY_FORMAT, asdict(cfg), sorted(snapshot_iters)], sort_keys=True)
    path = Path(cache_dir) / "toy" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    state = read_json(path)
    if isinstance(state, dict) and state.get("format") == TOY_FORMAT:
        try:
            return ToyResult.from_state(state)
        except (KeyError, TypeError, ValueError):
            pass  # not a whole result: run again
    result = run_toy(cfg, snapshot_iters=snapshot_iters)
    write_json(path, result.to_state())
    return result
