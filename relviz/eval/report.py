"""The comparison report: students side by side with the teacher (U, T, G, zero-shot and few-shot
mIoU, each with its interval and its sample), paired differences between students, and gap vs
performance. :func:`comparison_rows` builds the table from results already computed (the Compare
page calls it with its cached results); :func:`compare` computes them from checkpoints."""

from __future__ import annotations

import csv
import io
import json
import math
from itertools import combinations
from pathlib import Path
from typing import Mapping, Sequence

from relviz.data.dataset import NuScenesLidarSeg
from relviz.errors import InputError
from relviz.eval.evidence import MIN_CHECKPOINTS, gap_vs_performance
from relviz.eval.fewshot import evaluate_fewshot
from relviz.eval.structure import (gather_val_features, paired_comparison, protocol_sums, structure_result,
                                   teacher_view)
from relviz.files import atomic_path
from relviz.models.checkpoint import file_sha256, load_student
from relviz.teacher.cache import FeatureCache
from relviz.versions import package_versions

METRICS = ("uniformity", "tolerance", "gap", "gap_all_pairs", "zeroshot_miou", "fewshot_miou")
COLUMNS = ("checkpoint", "loss", *METRICS)
HEADERS = {"checkpoint": "checkpoint", "loss": "loss", "uniformity": "U", "tolerance": "T", "gap": "G",
           "gap_all_pairs": "G (all pairs)", "zeroshot_miou": "zero-shot mIoU", "fewshot_miou": "few-shot mIoU"}
TEACHER = "teacher (2D, paired points)"


def _samples(structure: Mapping, fewshot: Mapping | None) -> dict[str, str | None]:
    """What each column was measured on, in words."""
    s = structure["sample"]
    kf = f"{s['keyframes']} keyframe{'s' if s['keyframes'] != 1 else ''}"
    sample = (f"{s['size']:,} points: up to {s['per_class']:,} per class (seed {s['seed']}) of the {s['points']}, "
              f"{kf}")
    out = {m: sample for m in ("uniformity", "tolerance", "gap")}
    out["gap_all_pairs"] = f"all {s['points']} ({s['all_pairs_size']:,}), {kf}"
    out["zeroshot_miou"] = f"{s['zeroshot_scope']} ({s['zeroshot_points']:,}), {kf}"
    out["fewshot_miou"] = None if fewshot is None else (
        f"linear probe on {fewshot['fraction']:.0%} of the training frames ({len(fewshot.get('frames', []))} "
        f"frames), scored on " + (f"{fewshot['val_samples']} val frames" if "val_samples" in fewshot
                                  else "every val frame"))
    return out


def _row(label: str, loss, structure: Mapping, fewshot: Mapping | None) -> dict:
    if "sample" not in structure:
        raise InputError(f"the structure result of {label!r} has no sample description: it was computed before "
                         f"the analysis protocol (docs/protocol.md); compute it again")
    intervals = structure.get("intervals") or {}
    row = {"checkpoint": label, "loss": loss}
    for m in METRICS:
        value = structure.get(m) if m != "fewshot_miou" else (fewshot or {}).get("miou")
        interval = intervals.get(m) if m != "fewshot_miou" else (fewshot or {}).get("miou_interval")
        row[m] = value
        row[f"{m}_low"] = interval["low"] if interval else None
        row[f"{m}_high"] = interval["high"] if interval else None
    row["sample"] = _samples(structure, fewshot)
    return row


def comparison_rows(entries: Sequence[Mapping], teacher: Mapping | None = None) -> list[dict]:
    """The comparison table's rows, one per checkpoint, then the teacher's. ``entries``: dicts with
    ``checkpoint`` (its label), ``loss``, ``structure`` (a :func:`relviz.eval.structure.structure_metrics`
    result, with or without intervals) and ``fewshot`` (a :func:`relviz.eval.fewshot.evaluate_fewshot`
    result, or None); ``teacher``: the teacher's structure result on the same keyframes. A row holds
    ``checkpoint``, ``loss``, every metric of :data:`METRICS` with ``<metric>_low`` and
    ``<metric>_high`` (None without an interval) and ``sample`` (metric -> what it was measured on).
    Needs no model or dataset."""
    rows = [_row(e["checkpoint"], e.get("loss"), e["structure"], e.get("fewshot")) for e in entries]
    if teacher is not None:
        rows.append(_row(TEACHER, "-", teacher, None))
    return rows


def compare(checkpoints: list[str | Path], dataroot: str | Path, teacher, cache_root: str | Path,
            split: str = "mini_val", train_split: str = "mini_train", per_class: int = 5000, seed: int = 0,
            fewshot_fraction: float = 0.01, n_samples: int | None = None, device="cpu", progress=None,
            backend: str = "torch", version: str = "v1.0-mini", n_resamples: int = 1000,
            confidence: float = 0.95) -> dict:
    """Every checkpoint and the teacher on the first ``n_samples`` keyframes of ``split`` (all by
    default) under the analysis protocol, with bootstrap intervals over keyframes (``n_resamples``; 0:
    none); the paired difference of every two students; gap vs performance with 3 or more students.
    Returns {"rows", "paired", "evidence", "details", "protocol", "versions"}."""
    val = NuScenesLidarSeg(dataroot, version=version, split=split, load_images=False)
    train = NuScenesLidarSeg(dataroot, version=version, split=train_split, load_images=False, nusc=val.nusc)
    n = n_samples or len(val)
    cache = FeatureCache(cache_root, teacher.identity)
    text = teacher.class_embeddings().cpu()
    entries, sums, details, teacher_structure = [], {}, {}, None
    for i, path in enumerate(checkpoints):
        path = Path(path)
        model, meta = load_student(path, backend=backend, device=device)
        feats = gather_val_features(model, teacher, cache, val, n, device)
        label = path.stem if path.stem != "student" else path.parent.name
        sums[label] = protocol_sums(feats, text, per_class, seed)
        structure = structure_result(sums[label], n_resamples, confidence)
        few = evaluate_fewshot(model, train, val, fewshot_fraction, device, seed)
        entries.append({"checkpoint": label, "loss": meta.get("loss"), "structure": structure, "fewshot": few})
        details[label] = {"checkpoint": str(path), "sha256": file_sha256(path), "structure": structure, "fewshot": few}
        if teacher_structure is None:  # the teacher at the same paired points: its own structure, G = 0
            teacher_structure = structure_result(protocol_sums(teacher_view(feats), text, per_class, seed),
                                                 n_resamples, confidence)
            details["teacher"] = {"identity": teacher.identity, "structure": teacher_structure}
        if progress:
            progress(i + 1, len(checkpoints))
    rows = comparison_rows(entries, teacher_structure)
    paired = [{"a": a, "b": b, **paired_comparison(sums[a], sums[b], n_resamples, confidence)}
              for a, b in combinations(sums, 2)] if n_resamples and n >= 2 else []
    evidence = gap_vs_performance(rows[:-1], rows[-1], confidence) if len(entries) >= MIN_CHECKPOINTS else None
    return {"rows": rows, "paired": paired, "evidence": evidence, "details": details,
            "protocol": {"version": version, "split": split, "val_samples": n, "per_class": per_class, "seed": seed,
                         "fewshot_fraction": fewshot_fraction, "train_split": train_split, "dataroot": str(dataroot),
                         "n_resamples": n_resamples, "confidence": confidence},
            "versions": {k: v for k, v in package_versions().items() if v}}


# few-shot methods as experiment metrics are named "<method>@<fraction>" (e.g. "finetune@0.1")
FEWSHOT_METHODS = {"linear_probe": "linear probe", "finetune": "fine-tuned"}


def parse_fewshot_metric(metric: str) -> tuple[str, float] | None:
    """(method, fraction) of a ``<method>@<fraction>`` metric name, None for any other name."""
    method, at, fraction = metric.partition("@")
    return (method, float(fraction)) if at and method in FEWSHOT_METHODS else None


def format_mean_pm(summary: Mapping) -> str:
    """``0.368 ± 0.012`` (mean and half-width of an interval ``{"mean", "low", "high", "n"}``),
    ``0.368 (n=1)`` without an interval, ``-`` without a finite mean."""
    mean = summary.get("mean")
    if mean is None or not math.isfinite(mean):
        return "-"
    if summary.get("low") is None:
        return f"{mean:.3f} (n={summary.get('n')})"
    return f"{mean:.3f} ± {(summary['high'] - summary['low']) / 2:.3f}"


def format_value(v, low=None, high=None, signed: bool = False) -> str:
    """``0.368 [0.350, 0.381]``; the value alone without an interval; ``-`` for none."""
    if v is None:
        return "-"
    if not isinstance(v, float):
        return str(v)
    text = f"{v:+.3f}" if signed else f"{v:.3f}"
    return text if low is None or high is None else f"{text} [{low:.3f}, {high:.3f}]"


def _table(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + \
        ["| " + " | ".join(cells) + " |" for cells in lines]


def sample_notes(rows: Sequence[Mapping]) -> list[str]:
    """What every column was measured on, one line per distinct text, naming the columns (and, where
    rows differ, the rows) it describes."""
    notes: dict[str, list[str]] = {}  # text -> the headings it describes
    for m in METRICS:
        by_text: dict[str, list[str]] = {}
        for r in rows:
            if r["sample"].get(m):
                by_text.setdefault(r["sample"][m], []).append(r["checkpoint"])
        for text, labels in by_text.items():
            heading = HEADERS[m] if len(by_text) == 1 else f"{HEADERS[m]} ({', '.join(labels)})"
            notes.setdefault(text, []).append(heading)
    return [f"- {', '.join(headings)}: {text}" for text, headings in notes.items()]


def to_markdown(report: dict) -> str:
    rows, p = report["rows"], report["protocol"]
    lines = _table([HEADERS[c] for c in COLUMNS],
                   [[format_value(r["checkpoint"]), format_value(r["loss"])] +
                    [format_value(r[m], r[f"{m}_low"], r[f"{m}_high"]) for m in METRICS] for r in rows])
    lines += ["", f"{p['version']} {p['split']}, {p['val_samples']} keyframes. Values [low, high]: "
                  f"{p['confidence']:.0%} percentile bootstrap over keyframes ({p['n_resamples']} resamples)."
              if p.get("n_resamples") else f"{p['version']} {p['split']}, {p['val_samples']} keyframes; no intervals.",
              "", "Samples:"] + sample_notes(rows)
    paired = report.get("paired") or []
    if paired:
        cols = [m for m in METRICS if m in paired[0]["differences"]]
        lines += ["", "Paired differences (a - b, same keyframes; * = the interval excludes 0):", ""]
        lines += _table(["a - b"] + [HEADERS[m] for m in cols],
                        [[f"{d['a']} - {d['b']}"] + [format_value(x["value"], x["low"], x["high"], signed=True)
                                                      + (" *" if x["significant"] else "")
                                                      for x in (d["differences"][m] for m in cols)] for d in paired])
    evidence = report.get("evidence")
    if evidence:
        def coefficient(c, key):
            if c is None:
                return "-"
            return f"{c[key]:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}], p {c['p_permutation']:.3f}"

        lines += ["", f"Gap vs performance ({evidence['confidence']:.0%} intervals; p by permutation):", ""]
        lines += _table(["gap measure", "performance", "n", "Pearson r", "Spearman rho"],
                        [[c["measure"], c["performance"], str(c["n"]), coefficient(c["pearson"], "r"),
                          coefficient(c["spearman"], "rho")] for c in evidence["correlations"]])
    return "\n".join(lines) + "\n"


def _csv_fields() -> list[str]:
    return ["checkpoint", "loss"] + [f"{m}{s}" for m in METRICS for s in ("", "_low", "_high")]


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_csv_fields(), extrasaction="ignore")
    w.writeheader()
    for r in report["rows"]:
        w.writerow(r)
    return buf.getvalue()


def write_report(report: dict, out_dir: str | Path) -> Path:
    """results.md, results.csv, report.json and an HTML bar chart (with intervals) per metric."""
    import plotly.graph_objects as go

    out = Path(out_dir)
    for name, text in (("results.md", to_markdown(report)), ("results.csv", to_csv(report)),
                       ("report.json", json.dumps(report, indent=1, default=float))):
        with atomic_path(out / name) as tmp:
            Path(tmp).write_text(text)
    for metric in METRICS:
        rows = [r for r in report["rows"] if r[metric] is not None]
        plus = [None if r[f"{metric}_high"] is None else r[f"{metric}_high"] - r[metric] for r in rows]
        minus = [None if r[f"{metric}_low"] is None else r[metric] - r[f"{metric}_low"] for r in rows]
        fig = go.Figure(go.Bar(x=[r["checkpoint"] for r in rows], y=[r[metric] for r in rows],
                               error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus)))
        fig.update_layout(title=metric, yaxis_title=metric)
        with atomic_path(out / f"{metric}.html") as tmp:
            fig.write_html(tmp, include_plotlyjs="cdn")
    return out


__all__ = ["COLUMNS", "METRICS", "TEACHER", "compare", "comparison_rows", "format_value", "sample_notes", "to_csv",
           "to_markdown", "write_report"]
