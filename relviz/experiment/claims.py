"""The paper's claims, checked on an experiment's report: for each, whether it holds, is reversed,
or cannot be told from noise, from intervals over seeds.

A claim about one student against the teacher compares the interval over seeds of the student's
mean with the teacher's value (one value: the teacher has no seeds). A claim between two losses uses
the differences paired by seed (:func:`relviz.experiment.aggregate.cell_differences` does the same
for the raw metrics); "closest to the teacher" pairs the distances ``|U - U_teacher|`` by seed.
Cells are found by their ``loss`` value; a claim whose cells or metrics are missing is "not measured".
"""

from __future__ import annotations

from typing import Any, Mapping

from relviz.eval.report import parse_fewshot_metric
from relviz.experiment.aggregate import CONFIDENCE, interval_over_seeds, runs_by_cell

HOLDS, REVERSED, NOISE, MISSING = "holds", "reversed", "cannot be told from noise", "not measured"


def _cells_by_loss(report: Mapping) -> dict[str, Mapping]:
    return {c["values"].get("loss"): c for c in report["cells"] if "loss" in c["values"]}


def _seed_values(report: Mapping, cell: str, metric: str) -> dict[int, float]:
    return {seed: m[metric] for seed, m in runs_by_cell(report["runs"]).get(cell, {}).items()
            if m.get(metric) is not None}


def _verdict(low: float | None, high: float | None, sign: int) -> str:
    """``sign`` +1: the claim is "greater than 0"; -1: "less than 0"."""
    if low is None:
        return NOISE
    if (low > 0 and sign > 0) or (high < 0 and sign < 0):
        return HOLDS
    if (high < 0 and sign > 0) or (low > 0 and sign < 0):
        return REVERSED
    return NOISE


def _versus_teacher(report: Mapping, loss: str, metric: str, sign: int, claim: str) -> dict[str, Any]:
    cell = _cells_by_loss(report).get(loss)
    teacher = ((report.get("teacher") or {}).get("structure") or {}).get(metric)
    if cell is None or teacher is None or metric not in cell["metrics"]:
        return {"claim": claim, "verdict": MISSING, "evidence": "no such cell, metric or teacher reference"}
    s = cell["metrics"][metric]
    if s.get("mean") is None:  # no evaluated run, or a run without this metric
        return {"claim": claim, "verdict": MISSING, "evidence": f"no {metric} for every evaluated {loss} run"}
    iv = interval_over_seeds([v - teacher for v in s["values"] if v is not None], CONFIDENCE)
    evidence = (f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}] vs teacher {teacher:.3f} (n={s['n']})"
                if s.get("low") is not None else f"{s['mean']:.3f} (n={s['n']}) vs teacher {teacher:.3f}")
    return {"claim": claim, "verdict": _verdict(iv["low"], iv["high"], sign), "evidence": evidence}


def _paired(report: Mapping, a: str, b: str, metric: str, sign: int, claim: str,
            distance_to_teacher: bool = False) -> dict[str, Any]:
    cells = _cells_by_loss(report)
    teacher = ((report.get("teacher") or {}).get("structure") or {}).get(metric)
    if a not in cells or b not in cells or (distance_to_teacher and teacher is None):
        return {"claim": claim, "verdict": MISSING, "evidence": "no such cell or teacher reference"}
    va, vb = _seed_values(report, cells[a]["cell"], metric), _seed_values(report, cells[b]["cell"], metric)
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return {"claim": claim, "verdict": MISSING, "evidence": f"no seed with {metric} for both {a} and {b}"}
    f = (lambda v: abs(v - teacher)) if distance_to_teacher else (lambda v: v)
    diffs = [f(va[s]) - f(vb[s]) for s in seeds]
    iv = interval_over_seeds(diffs, CONFIDENCE)
    if iv["mean"] is None:  # a value that is not finite
        return {"claim": claim, "verdict": MISSING, "evidence": f"{metric} is not finite for a seed of {a} or {b}"}
    what = f"|{metric} - teacher|" if distance_to_teacher else metric
    interval = f" [{iv['low']:+.3f}, {iv['high']:+.3f}]" if iv["low"] is not None else ""
    return {"claim": claim, "verdict": _verdict(iv["low"], iv["high"], sign),
            "evidence": f"{a} - {b} {what}: {iv['mean']:+.3f}{interval} over {len(seeds)} paired seeds"}


def paper_claims(report: Mapping) -> list[dict[str, Any]]:
    """Every claim of the paper that an experiment over the three losses can check: rows of
    ``claim``, ``verdict`` (:data:`HOLDS`, :data:`REVERSED`, :data:`NOISE` or :data:`MISSING`) and
    ``evidence`` (the numbers it rests on)."""
    fewshot = [m for m in report["metrics"] if parse_fewshot_metric(m)]
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
    rows += [_paired(report, "relational", other, m, +1, f"few-shot ({report['headings'][m]}): relational above {other}")
             for other in ("similarity", "contrastive") for m in fewshot]
    rows += _correlation_claims(report)
    return rows


def _correlation_claims(report: Mapping) -> list[dict[str, Any]]:
    """The structural distance to the teacher correlates negatively with zero-shot and few-shot mIoU,
    with every evaluated run as one point (Pearson's r and its interval)."""
    result = (report.get("gap_vs_performance") or {}).get("across_runs") or {}
    out = []
    for performance in ("zeroshot_miou", "fewshot_miou"):
        claim = f"the structural gap correlates negatively with {performance.replace('_miou', '')} mIoU (over runs)"
        c = next((x for x in result.get("correlations", []) if x["measure"] == "structural_distance"
                  and x["performance"] == performance and x.get("pearson")), None)
        if c is None:
            reason = next((x.get("note") for x in result.get("correlations", []) if x["measure"] == "structural_distance"
                           and x["performance"] == performance and x.get("note")), None)
            out.append({"claim": claim, "verdict": MISSING, "evidence": reason or result.get("skipped", "not computed")})
            continue
        p = c["pearson"]
        out.append({"claim": claim, "verdict": _verdict(p["low"], p["high"], -1),
                    "evidence": f"Pearson r {p['r']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}], n = {c['n']}"})
    return out
