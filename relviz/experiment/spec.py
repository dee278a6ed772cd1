"""An experiment's declaration: a TOML file with a grid of training configurations (and sweeps
beside it), the seeds each cell is trained with, and the evaluations every finished run gets.

```toml
[experiment]
name = "losses"          # the folder under <workspace>/experiments (default: the file's stem)
seeds = [0, 1, 2]        # every cell is trained once per seed
max_running = 1          # jobs at once (default 1: one training fills 2 CPU cores)
preset = "demo"          # a training preset (relviz/train/presets/) under [train] (default none)

[train]                  # training fields every cell shares (TrainConfig), over the preset and settings
max_steps = 400

[grid]                   # one cell per combination of these lists (TrainConfig fields)
loss = ["contrastive", "similarity", "relational"]

[[sweep]]                # more cells after the grid's (any number of [[sweep]] tables, each a product grid)
seeds = [0, 1, 2]        # its cells' seeds (default: [experiment] seeds)
loss = ["contrastive"]
temperature = [0.03, 0.2]
linear_probe = [0.01]    # its runs' few-shot fractions, in place of [evaluate]'s (default: [evaluate]'s);
finetune = []            # only these two: every other evaluation key is the experiment's

[evaluate]
val_scenes = "all"       # val scenes for U, T, G and zero-shot mIoU (a number: drawn with seed 0)
val_per_scene = 2        # keyframes spread over each scene ("all": every keyframe)
replicates = 1000        # scene resamples kept per run for the claims' two-stage bootstrap
prompt_aggregation = "mean"  # zero-shot text rule: "mean" prototype per class, or OpenScene's "max" over details
per_class = 5000         # points per class of the stratified sample of U and T
seed = 0                 # the sample's seed: the same points for every run
linear_probe = [0.01]    # few-shot by a linear probe on frozen features, at these fractions
finetune = [0.01, 0.1]   # few-shot by fine-tuning the whole student, at these fractions (default none)
finetune_steps = 30      # its optimizer steps (default: SLidR's 100 epochs)
finetune_batch = 2       # frames per step (default: SLidR's 16)
finetune_seeds = 3       # fine-tuning seeds per run and fraction, seed, seed + 1, ...; each run's mIoU is their mean
fewshot_frames = "all"   # few-shot scored on every val frame, or on the "evaluation_set" (val_scenes x val_per_scene)
split = "mini_val"       # default: each run's val_split
train_split = "mini_val" # frames the probe learns from (default: each run's split)
ood_datasets = ["synthetic-kitti"]  # out of distribution: folders under <workspace>/datasets or absolute paths,
                         # nuScenes or SemanticKITTI layout; each gets the linear probe (and the fine-tuning when
                         # declared) at the fractions above, on its own splits, as the metrics
                         # "linear_probe@0.01@synthetic-kitti", "finetune@0.1@synthetic-kitti" (default none)
ood_linear_probe = [0.01]  # the fractions out of distribution, in place of each run's own (default: the same);
ood_finetune = []        # [] for none: a fine-tuning out of distribution costs as much as one in distribution
```

The cells are the [grid]'s (indexes 0, 1, ...) followed by each sweep's in the file's order, so a run's
key ``c<index>-<slug>-s<seed>`` never changes when a sweep is appended. A sweep's cell that would train
exactly as an earlier cell (the same fields over the preset and [train], the loss options its loss does
not read aside) is refused: it would count one configuration twice.
"""

from __future__ import annotations

import functools
import itertools
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from relviz.errors import RelvizError, shorten
from relviz.train.config import TrainConfig, merge_layers, preset_names, read_preset

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TABLES = ("experiment", "train", "grid", "sweep", "evaluate")
SWEEP_FRACTIONS = ("linear_probe", "finetune")  # the [evaluate] keys a [[sweep]] may set for its runs
EXPERIMENT_KEYS = ("name", "seeds", "max_running", "preset")
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name != "seed")  # seeds are their own axis


class ExperimentError(RelvizError):
    """An experiment file, folder or request that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class EvaluationSpec:
    """Which evaluations every finished run gets (see the module docstring's ``[evaluate]``)."""

    val_scenes: int | None = None  # None: every scene of the split
    val_per_scene: int | None = 2  # None: every keyframe of a scene
    replicates: int = 1000
    prompt_aggregation: str = "mean"
    per_class: int = 5000
    seed: int = 0
    linear_probe: tuple[float, ...] = (0.01,)
    finetune: tuple[float, ...] = ()
    finetune_steps: int | None = None
    finetune_batch: int = 16
    finetune_seeds: int = 3  # relviz.eval.finetune.FINETUNE_SEEDS (not imported: it would load torch to read a file)
    split: str | None = None
    train_split: str | None = None
    ood_datasets: tuple[str, ...] = ()  # added later, only they are computed: not part of the protocol
    ood_linear_probe: tuple[float, ...] | None = None  # None: the in-distribution fractions (a sweep's own)
    ood_finetune: tuple[float, ...] | None = None
    fewshot_frames: str = "all"  # few-shot scored on "all" val frames or on the "evaluation_set" (val_scenes x val_per_scene)

    def protocol(self, config: TrainConfig) -> dict[str, Any]:
        """Everything that decides a run's evaluation results besides its weights and the fraction
        (results are kept per fraction, so fractions can be added later). ``finetune_seeds`` only
        when the runs are fine-tuned: the other evaluations do not depend on it."""
        tuned = {"finetune_seeds": self.finetune_seeds} if self.finetune else {}
        if self.fewshot_frames != "all":  # absent for "all": results stored before the field existed stay valid
            tuned["fewshot_frames"] = self.fewshot_frames
        return {"dataset": config.dataset, "version": config.version, "split": self.split or config.val_split,
                "train_split": self.train_split or config.split, "val_scenes": self.val_scenes,
                "val_per_scene": self.val_per_scene, "replicates": self.replicates,
                "prompt_aggregation": self.prompt_aggregation,
                "per_class": self.per_class, "seed": self.seed, "finetune_steps": self.finetune_steps,
                "finetune_batch": self.finetune_batch, **tuned}

    @property
    def eval_set(self):
        """The evaluated keyframes (:class:`relviz.eval.selection.EvalSet`), drawn with seed 0."""
        from relviz.eval.selection import EvalSet

        return EvalSet(self.val_scenes, self.val_per_scene, 0)

    def wanted(self) -> dict[str, tuple[float, ...]]:
        """Few-shot method -> its fractions."""
        return {"linear_probe": self.linear_probe, "finetune": self.finetune}

    def wanted_ood(self) -> dict[str, tuple[float, ...]]:
        """Few-shot method -> its fractions on each of ``ood_datasets`` (the in-distribution ones where
        ``ood_<method>`` is not given)."""
        own = self.wanted()
        return {"linear_probe": own["linear_probe"] if self.ood_linear_probe is None else self.ood_linear_probe,
                "finetune": own["finetune"] if self.ood_finetune is None else self.ood_finetune}


@dataclass(frozen=True)
class Sweep:
    """One ``[[sweep]]`` table: a product grid of training fields (field -> its values) whose cells are
    trained with ``seeds`` (None: the experiment's) and evaluated with the few-shot fractions
    ``linear_probe`` and ``finetune`` (None: [evaluate]'s)."""

    grid: dict[str, list]
    seeds: tuple[int, ...] | None = None
    linear_probe: tuple[float, ...] | None = None
    finetune: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Cell:
    """One combination of a grid's values: ``values`` (field -> value), ``label`` ("loss=relational,
    lr=0.1", or "base" for an empty grid), ``slug`` (the same for folder names) and ``sweep``: 0 for
    a cell of the [grid] table, k for one of the k-th [[sweep]] table."""

    index: int
    values: dict[str, Any]
    label: str
    slug: str
    sweep: int = 0

    @property
    def table(self) -> str:
        """The table the cell comes from, as a report names it: "grid", or "sweep <k>"."""
        return "grid" if self.sweep == 0 else f"sweep {self.sweep}"


def _product(grid: dict[str, list], start: int, sweep: int) -> list[Cell]:
    """The cells of one product grid, the first axis varying slowest, indexed from ``start``."""
    axes = list(grid)
    out = []
    for i, combo in enumerate(itertools.product(*(grid[a] for a in axes))):
        values = dict(zip(axes, combo))
        label = ",".join(f"{a}={v}" for a, v in values.items()) or "base"
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(
            str(v) if a == "loss" else f"{a}{v}" for a, v in values.items()))[:48] or "base"
        out.append(Cell(start + i, values, label, slug, sweep))
    return out


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    seeds: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    evaluation: EvaluationSpec = EvaluationSpec()
    max_running: int = 1
    preset: str | None = None
    sweeps: tuple[Sweep, ...] = ()

    def cells(self) -> list[Cell]:
        """The [grid]'s combinations (indexes 0, 1, ...), then each [[sweep]]'s, every grid's first
        axis varying slowest (the file's order)."""
        out = _product(self.grid, 0, 0)
        for number, sweep in enumerate(self.sweeps, start=1):
            out += _product(sweep.grid, len(out), number)
        return out

    def seeds_for(self, cell: Cell) -> tuple[int, ...]:
        """The seeds ``cell`` is trained with: its sweep's, else the experiment's."""
        sweep = self.sweeps[cell.sweep - 1] if cell.sweep else None
        return self.seeds if sweep is None or sweep.seeds is None else sweep.seeds

    def runs(self) -> list[tuple[Cell, int]]:
        """Every (cell, seed) the experiment trains, in the file's order: each cell with its seeds."""
        return [(cell, seed) for cell in self.cells() for seed in self.seeds_for(cell)]

    def evaluation_for(self, cell: Cell) -> EvaluationSpec:
        """The evaluations a run of ``cell`` gets: [evaluate], with its sweep's few-shot fractions."""
        sweep = self.sweeps[cell.sweep - 1] if cell.sweep else None
        if sweep is None:
            return self.evaluation
        return replace(self.evaluation, **{k: getattr(sweep, k) for k in SWEEP_FRACTIONS
                                           if getattr(sweep, k) is not None})

    def identity(self) -> dict[str, Any]:
        """What a re-run must declare alike to continue this experiment: its cells (the [grid]'s and
        every sweep's, in order: they give the runs' keys). Seeds may be added (runs are keyed by
        cell and seed; a sweep's too), evaluations changed (results are kept per protocol and
        fraction; a sweep's fractions too) and ``max_running`` changed."""
        return {"name": self.name, "preset": self.preset, "train": self.train, "grid": self.grid,
                "sweeps": [s.grid for s in self.sweeps]}


class ExperimentFileError(ExperimentError):
    """A bad experiment file, named with the table and key: ``<file>: [table] 'key': what is wrong``."""

    def __init__(self, source: str, where: str, message: str):
        super().__init__(f"{source}: {where}: {message}")


def _table(data: dict, name: str, source: str) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ExperimentFileError(source, f"[{name}]", f"must be a table, got {shorten(table)}")
    return table


def _int(value: Any, source: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ExperimentFileError(source, where, f"must be a whole number >= {minimum}, got {shorten(value)}")
    return value


def _fractions(value: Any, source: str, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1
                                          for v in value):
        raise ExperimentFileError(source, where, f"must be a list of fractions in (0, 1], got {shorten(value)}")
    if len(set(value)) != len(value):
        raise ExperimentFileError(source, where, f"lists a fraction twice: {shorten(value)}")
    return tuple(float(v) for v in value)


def _split(value: Any, source: str, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ExperimentFileError(source, where, f"must be a split name such as mini_val, got {shorten(value)}")
    return value


def _aggregation(value, source: str) -> str:
    from relviz.teacher.prompts import AGGREGATIONS

    if value not in AGGREGATIONS:
        raise ExperimentFileError(source, "[evaluate] 'prompt_aggregation'",
                                  f"must be one of {', '.join(AGGREGATIONS)}, got {shorten(value)}")
    return value


def _ood_datasets(value: Any, source: str) -> tuple[str, ...]:
    """Dataset folder names or absolute paths, each once; no '@' (it separates a metric's parts)."""
    where = "[evaluate] 'ood_datasets'"
    if not isinstance(value, list) or any(not isinstance(v, str) or not v.strip() or "@" in v for v in value):
        raise ExperimentFileError(source, where, f"must be a list of dataset folders (names under the workspace's "
                                  f"datasets/ or absolute paths, without '@'), got {shorten(value)}")
    if len(set(value)) != len(value):
        raise ExperimentFileError(source, where, f"lists a dataset twice: {shorten(value)}")
    return tuple(value)


FEWSHOT_FRAMES = ("all", "evaluation_set")


def _choice(value: Any, choices: tuple[str, ...], source: str, where: str) -> str:
    if value not in choices:
        raise ExperimentFileError(source, where, f"must be one of {', '.join(repr(c) for c in choices)}, got {shorten(value)}")
    return value


def _count_or_all(value, source: str, where: str) -> int | None:
    """A whole number >= 1, or "all" (None)."""
    if value is None or value == "all":
        return None
    return _int(value, source, where, 1)


def _evaluation(table: dict, source: str) -> EvaluationSpec:
    known = [f.name for f in fields(EvaluationSpec)]
    if "val_samples" in table:
        raise ExperimentFileError(source, "[evaluate] 'val_samples'", "the first n keyframes were replaced by "
                                  "'val_scenes' and 'val_per_scene' (keyframes spread over scenes; \"all\" for every one)")
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ExperimentFileError(source, "[evaluate]", f"unknown key(s) {', '.join(shorten(k, 40) for k in unknown)}; "
                                          f"known: {', '.join(known)}")
    d = EvaluationSpec()
    return EvaluationSpec(
        val_scenes=_count_or_all(table.get("val_scenes", d.val_scenes), source, "[evaluate] 'val_scenes'"),
        val_per_scene=_count_or_all(table.get("val_per_scene", d.val_per_scene), source,
                                    "[evaluate] 'val_per_scene'"),
        replicates=_int(table.get("replicates", d.replicates), source, "[evaluate] 'replicates'", 0),
        prompt_aggregation=_aggregation(table.get("prompt_aggregation", d.prompt_aggregation), source),
        per_class=_int(table.get("per_class", d.per_class), source, "[evaluate] 'per_class'", 1),
        seed=_int(table.get("seed", d.seed), source, "[evaluate] 'seed'", 0),
        linear_probe=_fractions(table.get("linear_probe", list(d.linear_probe)), source, "[evaluate] 'linear_probe'"),
        finetune=_fractions(table.get("finetune", []), source, "[evaluate] 'finetune'"),
        finetune_steps=None if table.get("finetune_steps") is None else
        _int(table["finetune_steps"], source, "[evaluate] 'finetune_steps'", 1),
        finetune_batch=_int(table.get("finetune_batch", d.finetune_batch), source, "[evaluate] 'finetune_batch'", 1),
        finetune_seeds=_int(table.get("finetune_seeds", d.finetune_seeds), source, "[evaluate] 'finetune_seeds'", 1),
        split=_split(table.get("split"), source, "[evaluate] 'split'"),
        train_split=_split(table.get("train_split"), source, "[evaluate] 'train_split'"),
        ood_datasets=_ood_datasets(table.get("ood_datasets", []), source),
        ood_linear_probe=None if "ood_linear_probe" not in table else
        _fractions(table["ood_linear_probe"], source, "[evaluate] 'ood_linear_probe'"),
        ood_finetune=None if "ood_finetune" not in table else
        _fractions(table["ood_finetune"], source, "[evaluate] 'ood_finetune'"),
        fewshot_frames=_choice(table.get("fewshot_frames", d.fewshot_frames), FEWSHOT_FRAMES, source,
                               "[evaluate] 'fewshot_frames'"))


def _training_fields(table: dict, source: str, where: str) -> None:
    if "seed" in table:
        raise ExperimentFileError(source, f"{where} 'seed'", "seeds are declared once, as [experiment] seeds = [...]")
    unknown = sorted(set(table) - set(TRAIN_FIELDS))
    if unknown:
        raise ExperimentFileError(source, where, f"unknown training field(s) {', '.join(shorten(k, 40) for k in unknown[:5])}; "
                                  f"known: {', '.join(TRAIN_FIELDS)}")


def _seeds(value: Any, source: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                       for s in value):
        raise ExperimentFileError(source, where, f"must be a non-empty list of whole numbers >= 0, got {shorten(value)}")
    if len(set(value)) != len(value):
        raise ExperimentFileError(source, where, f"lists a seed twice: {shorten(value)}")
    return tuple(value)


def _axes(table: dict, train: dict, source: str, where: str) -> dict[str, list]:
    """A product grid's axes (training field -> its values), each a non-empty list of distinct values
    of a field [train] does not set."""
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise ExperimentFileError(source, f"{where} '{key}'", f"must be a non-empty list of values, got {shorten(values)}")
        if len({repr(v) for v in values}) != len(values):
            raise ExperimentFileError(source, f"{where} '{key}'", f"lists a value twice: {shorten(values)}")
        if key in train:
            raise ExperimentFileError(source, f"{where} '{key}'", "is also set in [train]; give it in one place")
    return {k: list(v) for k, v in table.items()}


def _sweeps(data: dict, train: dict, source: str) -> tuple[Sweep, ...]:
    """The ``[[sweep]]`` tables: each a product grid of training fields, with optional ``seeds`` and the
    few-shot fractions of :data:`SWEEP_FRACTIONS`; any other key is refused, named as ``[[sweep]] <k>``."""
    tables = data.get("sweep", [])
    if not isinstance(tables, list) or any(not isinstance(t, dict) for t in tables):
        raise ExperimentFileError(source, "[[sweep]]", f"must be an array of tables ([[sweep]] headers, each a grid "
                                                       f"of training fields), got {shorten(tables)}")
    sweeps = []
    for number, table in enumerate(tables, start=1):
        where = f"[[sweep]] {number}"
        if "seed" in table:
            raise ExperimentFileError(source, f"{where} 'seed'", "a sweep's seeds are declared as seeds = [...] "
                                                                 "(default: [experiment] seeds)")
        evaluation = sorted(set(table) & {f.name for f in fields(EvaluationSpec)} - set(TRAIN_FIELDS)
                            - set(SWEEP_FRACTIONS))  # val_scenes, split, ...: training fields first
        if evaluation:
            raise ExperimentFileError(source, f"{where} '{evaluation[0]}'", f"a sweep sets only the few-shot fractions "
                                      f"{' and '.join(SWEEP_FRACTIONS)} of its runs; every other evaluation key is "
                                      f"the experiment's, in [evaluate]")
        unknown = sorted(set(table) - set(TRAIN_FIELDS) - {"seeds", *SWEEP_FRACTIONS})
        if unknown:
            raise ExperimentFileError(source, f"{where} {shorten(unknown[0], 40)}", f"unknown key; a sweep takes "
                                      f"training fields (lists of values), seeds and {', '.join(SWEEP_FRACTIONS)}; "
                                      f"known training fields: {', '.join(TRAIN_FIELDS)}")
        grid = {k: v for k, v in table.items() if k in TRAIN_FIELDS}
        if not grid:
            raise ExperimentFileError(source, where, "declares no training field; a sweep is a grid of at least one "
                                                     "field such as temperature = [0.03, 0.2]")
        sweeps.append(Sweep(
            grid=_axes(grid, train, source, where),
            seeds=_seeds(table["seeds"], source, f"{where} 'seeds'") if "seeds" in table else None,
            **{k: _fractions(table[k], source, f"{where} '{k}'") for k in SWEEP_FRACTIONS if k in table}))
    return tuple(sweeps)


_BY_SETTINGS = object()  # a field the machine's settings give (dataset, device; a teacher they name): unknown here


@functools.cache
def _loss_options() -> dict[str, frozenset[str]]:
    """Loss -> the training fields it reads (:meth:`TrainConfig.loss_function`), for every registered loss."""
    from relviz.losses import LOSSES

    return {loss: frozenset(TrainConfig(loss=loss).loss_function().keywords) for loss in LOSSES}


def _trained_as(base: dict, train: dict, cell: Cell) -> tuple[dict, dict]:
    """What ``cell`` trains with, as far as the file decides it: the fields over ``base`` (the
    defaults and the preset) and [train], without the loss options its loss does not read; and the
    fields left out. A field the machine's settings may give (dataset, device, the teacher and its
    weights) that neither [train] nor the cell sets is marked :data:`_BY_SETTINGS`, equal only to
    another cell's such mark: two cells are refused only when they train alike whatever the settings."""
    fields_ = merge_layers(base, train, cell.values)
    given = set(train) | set(cell.values)
    if not {"teacher", "teacher_pretrained"} & given:
        fields_.update(teacher=_BY_SETTINGS, teacher_pretrained=_BY_SETTINGS)
    fields_.update({k: _BY_SETTINGS for k in ("dataset", "device") if k not in given})
    options = _loss_options()
    ignored = frozenset().union(*options.values()) - options.get(fields_.get("loss"), frozenset().union(*options.values()))
    return {k: v for k, v in fields_.items() if k not in ignored}, {k: fields_[k] for k in sorted(ignored)}


def _check_distinct(spec: "ExperimentSpec", source: str) -> None:
    """Refuse a sweep's cell that trains exactly as an earlier cell (see :func:`_trained_as`): one
    configuration would be counted twice. The [grid]'s cells are not compared among themselves (a
    product grid's cells differ in a declared value)."""
    base = {k: v for k, v in TrainConfig().to_dict().items() if k != "seed"}
    base = merge_layers(base, read_preset(spec.preset) if spec.preset else {})
    seen: list[tuple[Cell, dict, dict]] = []
    for cell in spec.cells():
        key, ignored = _trained_as(base, spec.train, cell)
        twin = next(((c, other) for c, k, other in seen if k == key), None) if cell.sweep else None
        if twin is not None:
            c, other = twin
            unread = [k for k in ignored if ignored[k] != other[k]]
            why = f"; the {key.get('loss')} loss does not read {', '.join(unread)}" if unread else ""
            raise ExperimentFileError(source, f"[[sweep]] {cell.sweep}", f"cell {cell.label!r} trains exactly as cell "
                                      f"{c.label!r} of {'[grid]' if c.sweep == 0 else f'[[sweep]] {c.sweep}'} (the same "
                                      f"training fields over the preset and [train]{why}): one configuration would be "
                                      f"counted twice; leave it out")
        seen.append((cell, key, ignored))
    labels: dict[str, Cell] = {}
    for cell in spec.cells():  # distinct trainings, but labels that print alike (1 and "1")
        if cell.label in labels:
            raise ExperimentFileError(source, "[grid]" if cell.sweep == 0 else f"[[sweep]] {cell.sweep}",
                                      f"cell {cell.label!r} has the label of an earlier cell (values that print "
                                      f"alike, such as 1 and \"1\"); give each value once, in one type")
        labels[cell.label] = cell


def parse_spec(data: dict, source: str, default_name: str) -> ExperimentSpec:
    """An :class:`ExperimentSpec` from a parsed TOML table; ``source`` names the file in errors.
    Training values are checked when configs are built (:meth:`relviz.experiment.Experiment`)."""
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ExperimentFileError(source, "tables", f"unknown table(s) {', '.join(shorten(k, 40) for k in unknown)}; expected "
                                     f"[experiment], [train], [grid], [[sweep]], [evaluate]")
    exp = _table(data, "experiment", source)
    bad_keys = sorted(set(exp) - set(EXPERIMENT_KEYS))
    if bad_keys:
        raise ExperimentFileError(source, "[experiment]", f"unknown key(s) {', '.join(shorten(k, 40) for k in bad_keys)}; "
                                           f"known: {', '.join(EXPERIMENT_KEYS)}")
    name = exp.get("name", default_name)
    if not isinstance(name, str) or not NAME.match(name):
        raise ExperimentFileError(source, "[experiment] 'name'", f"must be 1-64 letters, digits, '.', '_' or '-' (a folder name), "
                                                  f"got {shorten(name)}")
    if "seeds" not in exp:
        raise ExperimentFileError(source, "[experiment] 'seeds'", "is missing; expected a list of seeds such as [0, 1, 2]")
    seeds = _seeds(exp["seeds"], source, "[experiment] 'seeds'")
    max_running = _int(exp.get("max_running", 1), source, "[experiment] 'max_running'", 1)
    preset = exp.get("preset")
    if preset is not None and preset not in preset_names():
        raise ExperimentFileError(source, "[experiment] 'preset'", f"unknown preset {shorten(preset)}; known: "
                                                    f"{', '.join(preset_names())}")
    train, grid = _table(data, "train", source), _table(data, "grid", source)
    _training_fields(train, source, "[train]")
    _training_fields(grid, source, "[grid]")
    spec = ExperimentSpec(name=name, seeds=seeds, train=dict(train), grid=_axes(grid, train, source, "[grid]"),
                          evaluation=_evaluation(_table(data, "evaluate", source), source), max_running=max_running,
                          preset=preset, sweeps=_sweeps(data, train, source))
    _check_distinct(spec, source)
    return spec


def read_spec_text(path: str | Path) -> str:
    """The text of an experiment file (a clear error when it cannot be read)."""
    path = Path(path)
    try:
        return path.read_bytes().decode()
    except OSError as e:
        raise ExperimentError(f"experiment file {path}: cannot be read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ExperimentError(f"experiment file {path}: not UTF-8 text ({e})") from e


def spec_from_text(text: str, path: str | Path, default_name: str | None = None) -> ExperimentSpec:
    """The experiment declared by ``text`` (the contents of ``path``, which errors name); its name
    is ``[experiment] name``, else ``default_name``, else the file's stem."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"experiment file {path}: not valid TOML ({e})") from e
    return parse_spec(data, f"experiment file {path}", default_name or path.stem)


def load_spec(path: str | Path) -> ExperimentSpec:
    """The experiment declared by the TOML file ``path``."""
    return spec_from_text(read_spec_text(path), path)
