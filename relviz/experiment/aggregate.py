"""An experiment's report: per cell, the mean and 95% interval over seeds of every metric of its
runs' evaluations, beside the teacher's structure on the same keyframes; the gap-vs-performance
correlation (:mod:`relviz.eval.evidence`) over configurations (the cells), with the relation within
a cell beside it; the paper's claims as one family (:mod:`relviz.experiment.claims`); and each run's
validation curve. Written as ``report.json``, ``report.csv`` and ``report.md``."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from relviz.errors import InputError
from relviz.eval.report import (FEWSHOT_METHODS, fewshot_metric_name, format_cell, format_mean_pm, parse_fewshot_metric,
                                split_fewshot_metric)
from relviz.files import atomic_path, write_json

CONFIDENCE = 0.95
# metric -> (its heading, where it sits in a run's evaluation.json); few-shot metrics are added per fraction
STRUCTURE_METRICS = {"uniformity": "U", "tolerance": "T", "gap": "G", "zeroshot_miou": "zero-shot mIoU",
                     "zeroshot_miou_paired": "zero-shot mIoU (paired points)"}


GRID = "grid"  # the ``table`` of a cell of the [grid] table (relviz.experiment.spec.Cell.table)


def grid_cells(cells: list[dict]) -> list[dict]:
    """The cells (report rows or ``{"cell", "values", "table"}``) of the [grid] table, not of a
    [[sweep]]; every cell of a report written before sweeps existed (it has no ``table``)."""
    return [c for c in cells if c.get("table", GRID) == GRID]


def report_cells(cells: list[dict]) -> list[dict]:
    """The ``{"cell", "values", "table"}`` of :func:`aggregate` from a stored report's cell rows
    (what a re-derivation aggregates again); a row without ``table`` was written before sweeps
    existed, when every cell was the [grid]'s."""
    return [{"cell": c["cell"], "values": c["values"], "table": c.get("table", GRID)} for c in cells]


def run_metrics(evaluation: dict) -> dict[str, float]:
    """A run's evaluation (its ``evaluation.json``) as metric -> value: the structure metrics,
    ``linear_probe@<fraction>`` / ``finetune@<fraction>`` few-shot mIoU (fine-tuning's: the mean over
    its fine-tuning seeds, so the run, a student seed, stays the unit of every interval and claim) and
    the same out of distribution, ``<method>@<fraction>@<dataset>``, from its ``ood`` entries."""
    out = {k: evaluation["structure"][k] for k in STRUCTURE_METRICS if k in evaluation.get("structure", {})}
    for dataset, entry in [(None, evaluation), *(evaluation.get("ood") or {}).items()]:
        for method in FEWSHOT_METHODS:
            for fraction, result in (entry.get(method) or {}).items():
                out[fewshot_metric_name(method, fraction, dataset)] = result["miou"]
    return out


REPLICATED = ("uniformity", "tolerance", "gap", "zeroshot_miou", "zeroshot_miou_paired")


def run_replicates(evaluation: dict) -> dict | None:
    """The run's metrics on the shared scene resamples (``{"seed", "n", "values": {metric: [B]}}``):
    the structure metrics; ``finetune@<fraction>`` (the mean over the fine-tuning seeds, on the
    val split's scenes) where the fine-tuning stored resamples drawn alike (same seed and count); and
    ``linear_probe@<fraction>``, the probe's per-frame confusions on draws of the same seed and count
    (:func:`relviz.eval.fewshot.miou_on_scene_resamples`; the probe stores none itself). None when nothing had
    enough scenes for them."""
    stored = (evaluation.get("structure") or {}).get("replicates")
    values = {m: v for m, v in stored["values"].items() if m in REPLICATED} if stored else {}
    for fraction, result in (evaluation.get("finetune") or {}).items():
        tuned = result.get("replicates")
        if tuned and (stored is None or (tuned["seed"], tuned["n"]) == (stored["seed"], stored["n"])):
            stored = stored or {"seed": tuned["seed"], "n": tuned["n"]}
            values[f"finetune@{fraction}"] = tuned["values"]["miou"]
    if stored is not None and evaluation.get("linear_probe"):
        from relviz.eval.fewshot import miou_on_scene_resamples  # torch: only when a probe is there to resample

        for fraction, result in evaluation["linear_probe"].items():
            drawn = miou_on_scene_resamples(result, stored["n"], stored["seed"])
            if drawn is not None:
                values[f"linear_probe@{fraction}"] = drawn
    return None if stored is None else {**stored, "values": values}


def metric_heading(metric: str) -> str:
    if metric in STRUCTURE_METRICS:
        return STRUCTURE_METRICS[metric]
    parsed = split_fewshot_metric(metric)
    if parsed is None:
        raise InputError(f"unknown experiment metric {metric!r}")
    method, fraction, dataset = parsed
    return f"{FEWSHOT_METHODS[method]} {fraction:.0%} mIoU" + (f" on {dataset}" if dataset else "")


def interval_over_seeds(values: list[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean and Student-t interval over the seeds of one cell (:func:`relviz.stats.seed_interval`);
    with one value, or a value that is not finite, the interval is None (nothing bounds it)."""
    from relviz.stats import seed_interval

    finite = [v for v in values if v is not None and math.isfinite(v)]
    mean = sum(finite) / len(finite) if finite and len(finite) == len(values) else None
    try:
        iv = seed_interval(values, confidence)
    except InputError:
        return {"n": len(values), "mean": mean, "low": None, "high": None, "confidence": confidence}
    return {"n": iv.n, "mean": iv.value, "low": iv.low, "high": iv.high, "confidence": confidence}


def interval_over_seeds_and_scenes(runs: list[dict], metric: str, confidence: float = CONFIDENCE) -> dict | None:
    """Mean and two-stage bootstrap interval over the seeds of one cell and the evaluation scenes
    (:func:`relviz.stats.two_stage_bootstrap`, t with R - 1 df), from the runs' values of ``metric`` on
    their shared scene resamples (``replicates``, drawn alike: same seed and count); None with fewer than
    2 runs or where a run has no resamples of it (too few scenes, or a metric without them)."""
    from relviz.stats import two_stage_bootstrap

    stored = [r.get("replicates") or {} for r in runs]
    reps = [(s.get("values") or {}).get(metric) for s in stored]
    values = [r["metrics"].get(metric) for r in runs]
    if len(runs) < 2 or any(v is None for v in reps + values) or len({(s["seed"], s["n"]) for s in stored}) != 1:
        return None
    matrix = np.array([[np.nan if x is None else x for x in v] for v in reps], dtype=np.float64)
    iv = two_stage_bootstrap(values, matrix, confidence=confidence)
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return None
    return {"n": iv.n, "mean": iv.value, "low": iv.low, "high": iv.high, "confidence": confidence,
            "method": iv.method}


def fewshot_metric(metrics: list[str]) -> str | None:
    """The few-shot metric the correlation uses: the linear probe's at its first fraction (the review
    of docs/results.md: fine-tuning on a handful of frames is not yet credible enough to carry the
    correlation), else fine-tuning's, else None."""
    return next((m for method in ("linear_probe", "finetune") for m in metrics
                 if (parse_fewshot_metric(m) or ("",))[0] == method), None)  # in distribution only


def runs_by_cell(runs: list[dict]) -> dict[str, dict[int, dict]]:
    """Evaluated runs as cell -> seed -> metrics (runs without an evaluation are left out)."""
    by_cell: dict[str, dict[int, dict]] = {}
    for r in runs:
        if r["metrics"] is not None:
            by_cell.setdefault(r["cell"], {})[r["seed"]] = r["metrics"]
    return by_cell


def cell_differences(cells: list[dict], runs: list[dict], metrics: list[str],
                     confidence: float = CONFIDENCE) -> list[dict]:
    """For every pair of cells (a, b) and metric: the differences a - b of runs with the same seed
    (paired by seed: a seed fixes initialisation and data order alike for both), their mean and
    Student-t interval over seeds, and whether the interval excludes 0."""
    by_cell = runs_by_cell(runs)
    out = []
    names = [c["cell"] for c in cells]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            seeds = sorted(set(by_cell.get(a, {})) & set(by_cell.get(b, {})))
            row = {"a": a, "b": b, "seeds": seeds, "metrics": {}}
            for m in metrics:
                pairs = [(by_cell[a][s].get(m), by_cell[b][s].get(m)) for s in seeds]
                diffs = [x - y for x, y in pairs if x is not None and y is not None]
                iv = interval_over_seeds(diffs, confidence)
                iv["significant"] = None if iv["low"] is None else bool(iv["low"] > 0 or iv["high"] < 0)
                row["metrics"][m] = {**iv, "values": diffs}
            out.append(row)
    return out


CURVE_METRICS = ("uniformity", "tolerance", "gap", "zeroshot_miou")


def curve_means(cells: list[dict], runs: list[dict], curves: dict) -> list[dict]:
    """Structure during training per cell: at every validation step that all of the cell's runs with
    a curve reached, the mean over those runs of each of :data:`CURVE_METRICS`, and the spread
    (max - min) over them. Rows ``{"cell", "step", "n", <metric>, <metric>_spread}``."""
    rows = []
    for cell in cells:
        keyed = [curves[r["key"]] for r in runs if r["cell"] == cell["cell"] and curves.get(r["key"])]
        if not keyed:
            continue
        by_step = [{e["step"]: e for e in curve} for curve in keyed]
        for step in sorted(set.intersection(*(set(b) for b in by_step))):
            row = {"cell": cell["cell"], "step": step, "n": len(by_step)}
            for m in CURVE_METRICS:
                values = [b[step].get(m) for b in by_step]
                values = [v for v in values if v is not None and math.isfinite(v)]
                row[m] = sum(values) / len(values) if values else None
                row[f"{m}_spread"] = max(values) - min(values) if values else None
            rows.append(row)
    return rows


def _gap_vs_performance(rows: list[dict], teacher: dict) -> dict:
    """:func:`relviz.eval.evidence.gap_vs_performance` of ``rows``, or why it cannot be computed."""
    from relviz.eval.evidence import gap_vs_performance

    try:
        return gap_vs_performance(rows, teacher)
    except InputError as e:
        return {"skipped": str(e)}


def gap_correlations(cells: list[dict], runs: list[dict], teacher: dict | None, fewshot: str | None) -> dict:
    """The structural gaps against zero-shot and few-shot (``fewshot``) mIoU over configurations: every
    evaluated run is a row of its cell (its configuration), so n = cells and the relation among a
    cell's runs is reported beside it (:func:`relviz.eval.evidence.gap_vs_performance`)."""
    if teacher is None:
        return {"skipped": "no teacher reference (the cells do not share one teacher and evaluation keyframes)"}
    evaluated = [{"checkpoint": r["key"], "configuration": r["cell"], **{k: r["metrics"].get(k) for k in STRUCTURE_METRICS},
                  "fewshot_miou": r["metrics"].get(fewshot) if fewshot else None}
                 for r in runs if r["metrics"] is not None]
    return {"fewshot_metric": fewshot, **_gap_vs_performance(evaluated, teacher)}


def aggregate(cells: list[dict], runs: list[dict], teacher: dict | None = None, curves: dict | None = None,
              protocol: dict | None = None) -> dict:
    """The report. ``cells``: ``{"cell", "values", "table"}`` in the file's order, ``table`` "grid"
    for a cell of the [grid] table (the loss comparisons read those) or "sweep <k>" (a report written
    before sweeps existed has no ``table``: every cell was the grid's); ``runs``: ``{"key", "cell",
    "seed", "status", "metrics"}`` (metrics None when the run has no evaluation); ``teacher``: the
    teacher's structure on the same keyframes (:func:`relviz.experiment.teacher_reference`);
    ``curves``: run key -> validation events."""
    metrics = [m for m in STRUCTURE_METRICS if any(m in (r["metrics"] or {}) for r in runs)]
    metrics += sorted({m for r in runs for m in (r["metrics"] or {}) if m not in STRUCTURE_METRICS})
    rows = []
    for cell in cells:
        done = [r for r in runs if r["cell"] == cell["cell"] and r["metrics"] is not None]
        rows.append({"cell": cell["cell"], "values": cell["values"], "table": cell.get("table", GRID),
                     "seeds": [r["seed"] for r in done],
                     "metrics": {m: {**interval_over_seeds([r["metrics"][m] for r in done if m in r["metrics"]]),
                                     "values": [r["metrics"].get(m) for r in done],
                                     "scenes_and_seeds": interval_over_seeds_and_scenes(done, m)}
                                 for m in metrics}})
    missing = [{"key": r["key"], "status": r["status"]} for r in runs if r["metrics"] is None]
    correlations = gap_correlations(rows, runs, (teacher or {}).get("structure"), fewshot_metric(metrics))
    return {"metrics": metrics, "headings": {m: metric_heading(m) for m in metrics}, "confidence": CONFIDENCE,
            "interval": "Student t over seeds: mean +- t_{0.975, n-1} s / sqrt(n)", "cells": rows,
            "runs": runs, "missing": missing, "teacher": teacher, "gap_vs_performance": correlations,
            "differences": cell_differences(cells, runs, metrics),
            "curve_means": curve_means(cells, runs, curves or {}),
            "curves": curves or {}, "protocol": protocol}


def _fmt(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3f}"




def _correlation_lines(correlations: dict) -> list[str]:
    from relviz.eval.evidence import format_coefficient

    lines = ["", "## Gap vs performance, over configurations", ""]
    if "skipped" in correlations:
        return lines + [f"Not computed: {correlations['skipped']}."]
    lines += ["n counts configurations (cells), not runs; \"within\" is the relation among the runs of one cell "
              "(each run minus its cell's means). An interval or p is printed only where it can exist at that n.", "",
              "| gap measure | performance | n | Pearson r | Spearman rho | within a cell | note |",
              "|---|---|---|---|---|---|---|"]
    for c in correlations["correlations"]:
        perf = correlations["fewshot_metric"] if c["performance"] == "fewshot_miou" else c["performance"]
        w = c.get("within") or {}
        within = "-" if w.get("r") is None else f"{w['r']:+.2f} (n={w['n']})"
        lines.append(f"| {c['measure']} | {perf} | {c['n']} | {format_coefficient(c['pearson'], 'r')} | "
                     f"{format_coefficient(c['spearman'], 'rho')} | {within} | {c.get('note') or ''} |")
    return lines


def _difference_lines(differences: list[dict], report: dict) -> list[str]:
    if not differences:
        return []
    metrics = report["metrics"]
    lines = ["", "## Differences between cells, paired by seed", "",
             f"a - b over the seeds both have: mean ± half-width of the {report['confidence']:.0%} t interval; "
             "* = the interval excludes 0; (n=1): one seed, no interval. Each interval is at 95% on its own: "
             "over many pairs and metrics some exclude 0 by chance (no multiple-comparison correction).", "",
             "| a - b | seeds | " + " | ".join(report["headings"][m] for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for d in differences:
        cells = [format_mean_pm(d["metrics"][m]) + (" *" if d["metrics"][m]["significant"] else "") for m in metrics]
        lines.append(f"| {d['a']} - {d['b']} | {len(d['seeds'])} | " + " | ".join(cells) + " |")
    return lines


def _curve_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## During training", "",
             "Each run's own validation (its validation keyframes and `val_per_class` points per class): the "
             "mean over the cell's runs, and in brackets the spread (max - min) over them.", "",
             "| cell | step | runs | " + " | ".join(STRUCTURE_METRICS[m] for m in CURVE_METRICS) + " |",
             "|---|---|---|" + "---|" * len(CURVE_METRICS)]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['step']} | {r['n']} | " + " | ".join(
            "-" if r[m] is None else f"{r[m]:.3f} ({r[f'{m}_spread']:.3f})" for m in CURVE_METRICS) + " |")
    return lines


def evaluation_set_words(protocol: dict, teacher: dict | None = None) -> str:
    """The evaluation set of a report's protocol in words ("16 keyframes of 2 scenes"), for reports
    written before scenes were the unit too ("16 keyframes (the first 16)")."""
    sample = ((teacher or {}).get("structure") or {}).get("sample") or {}
    if "val_samples" in protocol:
        return f"the first {protocol['val_samples']} keyframes"
    if sample.get("scenes") is not None:
        return f"{sample['keyframes']} keyframes of {sample['scenes']} scenes"
    scenes = "every" if protocol.get("val_scenes") is None else protocol["val_scenes"]
    per = "every" if protocol.get("val_per_scene") is None else protocol["val_per_scene"]
    return f"{scenes} scenes x {per} keyframes per scene"


def to_markdown(report: dict, title: str) -> str:
    metrics = report["metrics"]
    lines = [f"# Experiment {title}", "",
             f"Mean ± half-width of the {report['confidence']:.0%} interval over seeds and scenes (two-stage bootstrap, "
             f"t with seeds - 1 df) where the runs stored scene resamples, marked †; else over seeds "
             f"({report['interval']}).", "",
             "| cell | seeds | " + " | ".join(report["headings"][m] for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for row in report["cells"]:
        lines.append(f"| {row['cell']} | {len(row['seeds'])} | "
                     + " | ".join(format_cell(row["metrics"][m]) for m in metrics) + " |")
    t = (report.get("teacher") or {}).get("structure")
    if t:
        lines.append(f"| teacher (2D, paired points) | - | "
                     + " | ".join(_fmt(t.get(m)) if m in STRUCTURE_METRICS and m != "zeroshot_miou" else "-"
                                  for m in metrics) + " |")
    lines += ["", "## Runs", "", "| run | cell | seed | status | " + " | ".join(report["headings"][m] for m in metrics)
              + " |", "|---|---|---|---|" + "---|" * len(metrics)]
    for r in report["runs"]:
        lines.append(f"| {r['key']} | {r['cell']} | {r['seed']} | {r['status']} | "
                     + " | ".join(_fmt((r["metrics"] or {}).get(m)) for m in metrics) + " |")
    if report.get("claims"):
        from relviz.eval.report import format_p

        family = next((c.get("family") for c in report["claims"] if c.get("family") is not None), 0)
        lines += ["", "## The paper's claims, here", "",
                  f"One family of {family} tested claims: the verdict follows the Holm-adjusted p (5%); \"too few "
                  "seeds\" below 5 seeds, \"too few scenes\" below 10 evaluation scenes, whatever the p. p: the "
                  "two-stage bootstrap over seeds and scenes where the runs stored scene resamples, else the t test "
                  "over seeds (conditional on the scenes); sign-flip: distribution-free over seeds.", "",
                  "| claim | verdict | evidence | p | p (Holm) | p sign-flip | test |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {c['claim']} | {c['verdict']} | {c['evidence']} | {format_p(c.get('p'))} | "
                  f"{format_p(c.get('p_holm'))} | {format_p(c.get('p_sign'))} | {c.get('test', '-')} |"
                  for c in report["claims"]]
    lines += _difference_lines(report.get("differences") or [], report)
    lines += _curve_lines(report.get("curve_means") or [])
    lines += _correlation_lines(report["gap_vs_performance"])
    p = report.get("protocol")
    if p:
        tuned = "" if not p.get("finetune_seeds") else \
            f" A run's fine-tuned mIoU is its mean over {p['finetune_seeds']} fine-tuning seeds."
        lines += ["", f"Evaluation: {evaluation_set_words(p, report.get('teacher'))} of {p['split']} for U, T, G "
                      f"and zero-shot (up to {p['per_class']} points per class, sample seed {p['seed']}); few-shot on "
                      f"{p['train_split']} frames, scored on every {p['split']} frame.{tuned}"]
    ood = sorted({parsed[2] for m in metrics if (parsed := split_fewshot_metric(m)) and parsed[2]})
    if ood:
        lines += ["", f"Out of distribution ({', '.join(ood)}): few-shot on each dataset's own splits (nuScenes: "
                      "mini_train / mini_val or train / val; SemanticKITTI: 00-07, 09, 10 / 08, every k-th scan), "
                      "mIoU over its own classes; in the claims' family, with no verdict where no scene resamples exist (one val "
                      "sequence)."]
    if report["missing"]:
        lines += ["", "Not in the table (no evaluation yet): "
                  + ", ".join(f"{m['key']} ({m['status']})" for m in report["missing"]) + "."]
    return "\n".join(lines) + "\n"


def to_csv(report: dict) -> str:
    """One row per cell: ``<metric>_mean``, ``_low``, ``_high`` and ``_n`` for every metric (the interval
    over seeds), and ``_low_scenes_seeds``, ``_high_scenes_seeds`` (over seeds and scenes; empty where the
    runs stored no scene resamples)."""
    buf = io.StringIO()
    axes = list(dict.fromkeys(a for row in report["cells"] for a in row["values"]))  # every table's, in order
    parts = ("mean", "low", "high", "n", "low_scenes_seeds", "high_scenes_seeds")
    columns = ["cell", *axes, "seeds", *(f"{m}_{s}" for m in report["metrics"] for s in parts)]
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for row in report["cells"]:
        both = {m: row["metrics"][m].get("scenes_and_seeds") or {} for m in report["metrics"]}
        w.writerow({"cell": row["cell"], **row["values"], "seeds": len(row["seeds"]),
                    **{f"{m}_{s}": row["metrics"][m][s] for m in report["metrics"] for s in parts[:4]},
                    **{f"{m}_{s}_scenes_seeds": both[m].get(s) for m in report["metrics"] for s in ("low", "high")}})
    return buf.getvalue()


def write_report(report: dict, folder: str | Path, title: str) -> dict[str, Path]:
    """``report.json``, ``report.csv`` and ``report.md`` in ``folder``, each written atomically."""
    folder = Path(folder)
    paths = {"json": folder / "report.json", "csv": folder / "report.csv", "markdown": folder / "report.md"}
    write_json(paths["json"], report)
    for kind, text in (("csv", to_csv(report)), ("markdown", to_markdown(report, title))):
        with atomic_path(paths[kind]) as tmp:
            Path(tmp).write_text(text)
    return paths
