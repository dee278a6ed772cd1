"""The paper's claims, checked on an experiment's report as one family: for each, whether it holds,
is reversed, or cannot be told from noise, with its raw and Holm-adjusted p-values.

A claim compares per-seed values: a student's value minus the teacher's on the same evaluation set,
two losses paired by seed, or, for "closer to the teacher", the distances ``|U - U_teacher|`` paired by
seed. Beside the Student-t interval over seeds (conditional on the evaluation scenes) each row has a
distribution-free sign-flip p over seeds and, where every run stored its metrics on the shared scene
resamples (10 scenes or more), a two-stage bootstrap over seeds and scenes whose p is the claim's
test: seed and scene variance together, the teacher's own evaluation uncertainty included (its
value on each scene resample is subtracted resample by resample). Without those replicates the t
test's p stands in, marked as conditional on the scenes.

The verdict word follows the Holm-adjusted p over the whole family (every claim with a test, the
correlation claims included): "holds" or "reversed" by the estimate's sign when it is below 5%, else
"cannot be told from noise"; with fewer than :data:`relviz.stats.MIN_SEEDS` seeds "too few seeds"
(a distribution-free test over seeds needs 6 to reach 5%: the smallest two-sided sign-flip p is
0.0625 with 5), with an evaluation set of fewer than :data:`relviz.stats.MIN_SCENES` scenes "too few
scenes", and without the runs' scene resamples (linear-probe results, fine-tuning scored on fewer
than MIN_SCENES val scenes, or ``replicates = 0``) :data:`NO_SCENE_VARIANCE`, whatever the p: a
verdict needs seed and scene variance together.

Fine-tuned few-shot claims use the seeds of both the student and the fine-tuning: the unit is the
student seed (the run), its value the mean over its fine-tuning seeds (and on each shared scene
resample, the mean of theirs), so an interval over student seeds carries the fine-tuning's noise
(divided by their count) with the student's; the claim's text names that unit.

The loss comparisons read the cell of each loss of the experiment's [grid] table (the last of that
loss when the grid has several), never a [[sweep]]'s cell. The gap-vs-performance claims are over
every configuration (the cells of the grid and of every sweep), with "too few configurations" below
:data:`relviz.eval.evidence.MIN_FOR_INFERENCE`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from relviz.eval.evidence import MIN_FOR_INFERENCE
from relviz.eval.report import format_p, split_fewshot_metric
from relviz.experiment.aggregate import CONFIDENCE, grid_cells, interval_over_seeds, runs_by_cell
from relviz.stats import MIN_SCENES, MIN_SEEDS, holm, sign_flip_p, significance_level, t_test_p, two_stage_bootstrap

HOLDS, REVERSED, NOISE, MISSING = "holds", "reversed", "cannot be told from noise", "not measured"
FEW_SEEDS, FEW_SCENES, FEW_CONFIGURATIONS = "too few seeds", "too few scenes", "too few configurations"
NO_SCENE_VARIANCE = "cannot be told: no scene resamples"  # runs that stored none (few-shot, replicates = 0)
# 0.05, not 1 - 0.95 (0.050000000000000044: a Holm-adjusted p of exactly 0.05, as 4 x an exact
# permutation p of 1/80, passed "p < ALPHA" by that rounding alone)
ALPHA = significance_level(CONFIDENCE)


def _cells_by_loss(report: Mapping) -> dict[str, Mapping]:
    """Loss -> the [grid] table's cell of that loss (the last, when the grid has several), never a
    [[sweep]]'s: the loss comparison is the grid's design (its seeds, its evaluations)."""
    return {c["values"].get("loss"): c for c in grid_cells(report["cells"]) if "loss" in c["values"]}


def _teacher(report: Mapping) -> Mapping:
    return (report.get("teacher") or {}).get("structure") or {}


def _seed_values(report: Mapping, cell: str, metric: str) -> dict[int, float]:
    return {seed: m[metric] for seed, m in runs_by_cell(report["runs"]).get(cell, {}).items()
            if m.get(metric) is not None}


def _seed_replicates(report: Mapping, cell: str, metric: str) -> dict[int, np.ndarray]:
    """seed -> the run's ``metric`` on the shared scene resamples (runs that stored them, drawn with the
    teacher's resample seed: the same multisets of scenes)."""
    want = (_teacher(report).get("replicates") or {}).get("seed")
    out = {}
    for r in report["runs"]:
        stored = r.get("replicates") or {}
        values = (stored.get("values") or {}).get(metric)
        if r["cell"] == cell and values is not None and (want is None or stored.get("seed") == want):
            out[r["seed"]] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return out


def _teacher_replicates(report: Mapping, metric: str) -> np.ndarray | None:
    values = ((_teacher(report).get("replicates") or {}).get("values") or {}).get(metric)
    return None if values is None else np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _scenes(report: Mapping) -> int | None:
    """Scenes of the evaluation set (from the teacher's sample description), None when unknown."""
    return (_teacher(report).get("sample") or {}).get("scenes")


def _test(report: Mapping, claim: str, sign: int, diffs: list[float], replicates: list[np.ndarray] | None,
          what: str, unit: str = "seeds") -> dict[str, Any]:
    """A claim row from per-seed differences (and their scene replicates [R][B], when every seed has
    them): the estimate, the t interval and p over seeds, the sign-flip p, the two-stage bootstrap.
    ``unit`` names the seeds in the evidence ("student seeds, each the mean over 3 fine-tuning seeds")."""
    iv = interval_over_seeds(diffs, CONFIDENCE)
    if iv["mean"] is None:
        return {"claim": claim, "verdict": MISSING, "evidence": f"{what}: a value is not finite"}
    row = {"claim": claim, "sign": sign, "estimate": iv["mean"], "seeds": len(diffs), "scenes": _scenes(report),
           "t_interval": None if iv["low"] is None else [iv["low"], iv["high"]], "p_t": t_test_p(diffs),
           "p_sign": sign_flip_p(diffs), "two_stage": None}
    if replicates is not None and len({len(r) for r in replicates}) != 1:
        replicates = None  # runs that stored resamples of another count: not the same scene resamples
    if replicates is not None and len(diffs) >= 2:
        two = two_stage_bootstrap(diffs, np.stack(replicates), confidence=CONFIDENCE)
        row["two_stage"] = {"low": two.low, "high": two.high, "p": two.p, "resamples": two.n_resamples}
    row["p"] = row["two_stage"]["p"] if row["two_stage"] else row["p_t"]
    row["test"] = "two-stage bootstrap over seeds and scenes" if row["two_stage"] else \
        "t test over seeds (conditional on the evaluation scenes)"
    interval = row["two_stage"] or (None if iv["low"] is None else {"low": iv["low"], "high": iv["high"]})
    bounds = "" if interval is None else f" [{interval['low']:+.3f}, {interval['high']:+.3f}]"
    row["evidence"] = f"{what}: {iv['mean']:+.3f}{bounds} over {len(diffs)} {unit}"
    return row


def _versus_teacher(report: Mapping, loss: str, metric: str, sign: int, claim: str) -> dict[str, Any]:
    cell = _cells_by_loss(report).get(loss)
    teacher = _teacher(report).get(metric)
    if cell is None or teacher is None:
        return {"claim": claim, "verdict": MISSING, "evidence": "no such cell, metric or teacher reference"}
    values = _seed_values(report, cell["cell"], metric)
    if not values:
        return {"claim": claim, "verdict": MISSING, "evidence": f"no {metric} for an evaluated {loss} run"}
    seeds = sorted(values)
    reps, t_reps = _seed_replicates(report, cell["cell"], metric), _teacher_replicates(report, metric)
    replicates = [reps[s] - t_reps for s in seeds] if t_reps is not None and set(seeds) <= set(reps) else None
    return _test(report, claim, sign, [values[s] - teacher for s in seeds], replicates,
                 f"{loss} {metric} - teacher's {teacher:.3f}")


def _paired(report: Mapping, a: str, b: str, metric: str, sign: int, claim: str,
            distance_to_teacher: bool = False, unit: str = "seeds") -> dict[str, Any]:
    cells = _cells_by_loss(report)
    teacher = _teacher(report).get(metric)
    if a not in cells or b not in cells or (distance_to_teacher and teacher is None):
        return {"claim": claim, "verdict": MISSING, "evidence": "no such cell or teacher reference"}
    va, vb = _seed_values(report, cells[a]["cell"], metric), _seed_values(report, cells[b]["cell"], metric)
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return {"claim": claim, "verdict": MISSING, "evidence": f"no seed with {metric} for both {a} and {b}"}
    f = (lambda v, t: np.abs(v - t)) if distance_to_teacher else (lambda v, t: v)
    diffs = [float(f(va[s], teacher) - f(vb[s], teacher)) for s in seeds]
    ra, rb = _seed_replicates(report, cells[a]["cell"], metric), _seed_replicates(report, cells[b]["cell"], metric)
    t_reps = _teacher_replicates(report, metric) if distance_to_teacher else 0.0
    replicates = None
    if set(seeds) <= set(ra) & set(rb) and t_reps is not None:
        replicates = [f(ra[s], t_reps) - f(rb[s], t_reps) for s in seeds]
    what = f"{a} - {b} |{metric} - teacher|" if distance_to_teacher else f"{a} - {b} {metric}"
    return _test(report, claim, sign, diffs, replicates, what, unit)


def _fewshot_unit(report: Mapping, metric: str) -> str:
    """The unit of a few-shot claim's seeds: student seeds, for fine-tuning each the mean over its
    fine-tuning seeds (their count from the report's protocol when it records it)."""
    if split_fewshot_metric(metric)[0] != "finetune":
        return "student seeds"
    count = (report.get("protocol") or {}).get("finetune_seeds")
    return f"student seeds, each the mean over {count or 'its'} fine-tuning seed{'' if count == 1 else 's'}"


def _correlation_claims(report: Mapping) -> list[dict[str, Any]]:
    """|dU| and |dT| (each its own claim) correlate negatively with zero-shot and few-shot mIoU, over
    configurations (the cells' means: n = configurations), with the relation within a configuration
    beside it."""
    result = (report.get("gap_vs_performance") or {})
    out = []
    for measure, name in (("uniformity_gap", "|U - U_teacher|"), ("tolerance_gap", "|T - T_teacher|")):
        for performance in ("zeroshot_miou", "fewshot_miou"):
            claim = f"{name} correlates negatively with {performance.replace('_miou', '')} mIoU (over configurations)"
            c = next((x for x in result.get("correlations", []) if x["measure"] == measure
                      and x["performance"] == performance), None)
            if c is None or not c.get("pearson"):
                reason = (c or {}).get("note") or result.get("skipped", "not computed")
                out.append({"claim": claim, "verdict": MISSING, "evidence": reason})
                continue
            p = c["pearson"]
            within = c.get("within") or {}
            w = "" if within.get("r") is None else f"; within a configuration r {within['r']:+.2f} (n={within['n']})"
            row = {"claim": claim, "sign": -1, "estimate": p["r"], "configurations": c["n"],
                   "p": p.get("p_permutation"), "test": "permutation of configurations (Pearson r)",
                   "evidence": f"Pearson r {p['r']:+.2f}" + ("" if p.get("low") is None else
                                                             f" [{p['low']:+.2f}, {p['high']:+.2f}]")
                   + f", n = {c['n']} configurations{w}"}
            if c["n"] < MIN_FOR_INFERENCE:
                row["blocked"] = FEW_CONFIGURATIONS
            out.append(row)
    return out


def _verdict(row: dict) -> str:
    if row.get("verdict") == MISSING:
        return MISSING
    if row.get("blocked"):
        return row["blocked"]
    if row.get("seeds") is not None and row["seeds"] < MIN_SEEDS:
        return FEW_SEEDS
    if row.get("seeds") is not None and (row.get("scenes") or 0) < MIN_SCENES:
        return FEW_SCENES
    if row.get("seeds") is not None and row.get("two_stage") is None:  # a t test over seeds alone: no verdict
        return NO_SCENE_VARIANCE
    if row.get("p_holm") is None:
        return NOISE
    if row["p_holm"] < ALPHA:
        return HOLDS if np.sign(row["estimate"]) == row["sign"] else REVERSED
    return NOISE


def paper_claims(report: Mapping) -> list[dict[str, Any]]:
    """Every claim of the paper that an experiment over the three losses can check, as one family:
    rows of ``claim``, ``verdict`` (:data:`HOLDS`, :data:`REVERSED`, :data:`NOISE`, :data:`FEW_SEEDS`,
    :data:`FEW_SCENES`, :data:`FEW_CONFIGURATIONS` or :data:`MISSING`), ``evidence`` (the numbers in
    words), ``estimate``, ``p`` (the claim's test, named in ``test``), ``p_holm`` (Holm over every row
    with a p), ``p_t`` and ``p_sign`` (over seeds), ``t_interval`` and ``two_stage``."""
    # in distribution and out of it: the paper claims both, so both are in the family whose p-values Holm
    # adjusts; without scene resamples (SemanticKITTI's val is one sequence) a row gets no verdict
    fewshot = [m for m in report["metrics"] if split_fewshot_metric(m)]
    rows = [
        _versus_teacher(report, "contrastive", "uniformity", +1, "contrastive: U above the teacher's"),
        _versus_teacher(report, "contrastive", "tolerance", -1, "contrastive: T below the teacher's"),
        _versus_teacher(report, "similarity", "uniformity", -1, "similarity: U below the teacher's"),
        _versus_teacher(report, "similarity", "tolerance", +1, "similarity: T above the teacher's"),
    ]
    for other in ("contrastive", "similarity"):
        rows += [
            _paired(report, "relational", other, "uniformity", -1, f"relational: U closer to the teacher's than {other}",
                    distance_to_teacher=True),
            _paired(report, "relational", other, "tolerance", -1, f"relational: T closer to the teacher's than {other}",
                    distance_to_teacher=True),
            _paired(report, "relational", other, "gap", -1, f"relational: smaller G than {other}"),
            _paired(report, "relational", other, "zeroshot_miou", +1, f"relational: better zero-shot than {other}"),
        ]
    rows += [_paired(report, "relational", other, m, +1, f"few-shot ({report['headings'][m]}): relational above "
                     f"{other} (unit: {_fewshot_unit(report, m)})", unit=_fewshot_unit(report, m))
             for other in ("similarity", "contrastive") for m in fewshot]
    rows += _correlation_claims(report)
    tested = [r.get("p") if r.get("verdict") != MISSING else None for r in rows]
    family = sum(p is not None for p in tested)
    for row, adjusted in zip(rows, holm(tested)):
        row.update(p_holm=adjusted, family=family)
        row["verdict"] = _verdict(row)
    return rows


__all__ = ["FEW_CONFIGURATIONS", "FEW_SCENES", "FEW_SEEDS", "HOLDS", "MISSING", "NOISE", "NO_SCENE_VARIANCE", "REVERSED",
           "paper_claims"]
