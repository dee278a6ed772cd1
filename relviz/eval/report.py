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
from relviz.eval.evidence import MIN_CHECKPOINTS, format_coefficient, gap_vs_performance
from relviz.eval.fewshot import evaluate_fewshot
from relviz.eval.selection import EvalSet
from relviz.eval.structure import (gather_val_features, paired_comparison, protocol_sums, structure_result,
                                   teacher_view)
from relviz.files import atomic_path
from relviz.models.checkpoint import PROVENANCE, file_sha256, load_student
from relviz.models.featureset import FeatureSet, open_feature_set, text_space_matches
from relviz.teacher.cache import FeatureCache
from relviz.teacher.prompts import DEFAULT_AGGREGATION
from relviz.teacher.text import text_classifier
from relviz.versions import package_versions

METRICS = ("uniformity", "tolerance", "gap", "gap_all_pairs", "zeroshot_miou", "zeroshot_miou_paired",
           "zeroshot_miou_devkit", "fewshot_miou")
COLUMNS = ("checkpoint", "loss", *METRICS)
HEADERS = {"checkpoint": "checkpoint", "loss": "loss", "uniformity": "U", "tolerance": "T", "gap": "G",
           "gap_all_pairs": "G (all pairs)", "zeroshot_miou": "zero-shot mIoU",
           "zeroshot_miou_paired": "zero-shot mIoU (paired points)", "zeroshot_miou_devkit": "zero-shot mIoU (devkit)",
           "fewshot_miou": "few-shot mIoU"}
TEACHER = "teacher (2D, paired points)"
# the teacher has features only at paired points: its zero-shot sits in the paired column alone, beside the
# students' scores on the same points (never beside their scores over all labelled points)
NOT_FOR_TEACHER = ("zeroshot_miou", "zeroshot_miou_devkit")


def _samples(structure: Mapping, fewshot: Mapping | None) -> dict[str, str | None]:
    """What each column was measured on, in words."""
    s = structure["sample"]
    kf = f"{s['keyframes']} keyframe{'s' if s['keyframes'] != 1 else ''}" + (
        f" of {s['scenes']} scene{'s' if s['scenes'] != 1 else ''}" if "scenes" in s else "")
    sample = (f"{s['size']:,} points: up to {s['per_class']:,} per class (seed {s['seed']}) of the {s['points']}, "
              f"{kf}")
    out = {m: sample for m in ("uniformity", "tolerance", "gap")}
    out["gap_all_pairs"] = f"all {s['points']} ({s['all_pairs_size']:,}), {kf}"
    listed = structure.get("zeroshot_classes")
    classes = f", mean over the {len(listed)} classes with ground truth" if listed else ""
    out["zeroshot_miou"] = f"{s['zeroshot_scope']} ({s['zeroshot_points']:,}), {kf}{classes}"
    out["zeroshot_miou_paired"] = f"{s['points']} ({s['all_pairs_size']:,}), {kf}"
    out["zeroshot_miou_devkit"] = f"{s['zeroshot_scope']}, {kf}, nuscenes-devkit's rule (an absent class predicted: 0)"
    out["fewshot_miou"] = None if fewshot is None else (
        f"linear probe on {_labelled(fewshot)}, scored on every val frame")
    return out


def _labelled(fewshot: Mapping) -> str:
    """The frames a few-shot result learned from, as asked and as labelled."""
    from relviz.eval.fewshot import describe_selection

    try:
        return describe_selection(fewshot)
    except (KeyError, TypeError, ZeroDivisionError):  # a result stored before the selection was recorded
        return f"{fewshot['fraction']:.0%} of the training frames ({len(fewshot.get('frames', []))} frames)"


def _row(label: str, loss, structure: Mapping, fewshot: Mapping | None, teacher: bool = False,
         configuration: str | None = None, source: str | None = None) -> dict:
    if "sample" not in structure:
        raise InputError(f"the structure result of {label!r} has no sample description: it was computed before "
                         f"the analysis protocol (docs/protocol.md); compute it again")
    intervals = structure.get("intervals") or {}
    row = {"checkpoint": label, "loss": loss, "source": source}
    for m in METRICS:
        if teacher and m in NOT_FOR_TEACHER:
            row.update({m: None, f"{m}_low": None, f"{m}_high": None})
            continue
        value = structure.get(m) if m != "fewshot_miou" else (fewshot or {}).get("miou")
        interval = intervals.get(m) if m != "fewshot_miou" else (fewshot or {}).get("miou_interval")
        row[m] = value
        row[f"{m}_low"] = interval["low"] if interval else None
        row[f"{m}_high"] = interval["high"] if interval else None
    row["sample"] = _samples(structure, fewshot)
    row["configuration"] = configuration
    row["per_scene"] = structure.get("per_scene")
    row["interval_refused"] = (structure.get("bootstrap") or {}).get("skipped")
    return row


def comparison_rows(entries: Sequence[Mapping], teacher: Mapping | None = None) -> list[dict]:
    """The comparison table's rows, one per checkpoint, then the teacher's. ``entries``: dicts with
    ``checkpoint`` (its label), ``loss``, ``structure`` (a :func:`relviz.eval.structure.structure_metrics`
    result, with or without intervals) and ``fewshot`` (a :func:`relviz.eval.fewshot.evaluate_fewshot`
    result, or None); ``teacher``: the teacher's structure result on the same keyframes. A row holds
    ``checkpoint``, ``loss``, every metric of :data:`METRICS` with ``<metric>_low`` and
    ``<metric>_high`` (None without an interval) and ``sample`` (metric -> what it was measured on).
    Needs no model or dataset."""
    rows = [_row(e["checkpoint"], e.get("loss"), e["structure"], e.get("fewshot"),
                 configuration=e.get("configuration"), source=e.get("source")) for e in entries]
    if teacher is not None:
        rows.append(_row(TEACHER, "-", teacher, None, teacher=True, source="the workspace teacher"))
    return rows


def _open_source(path: Path, backend: str, device) -> tuple[object, dict, str]:
    """(model or feature set, metadata, provenance) of a checkpoint file or a feature set folder."""
    if path.is_dir():
        fs = open_feature_set(path)
        return fs, fs.manifest.to_dict(), f"{PROVENANCE['features']} {path}"
    model, meta = load_student(path, backend=backend, device=device)
    return model, meta, f"{PROVENANCE['published' if meta.get('source_format') else 'checkpoint']} {path}"


def in_teacher_space(model, meta: Mapping, teacher) -> bool:
    """Whether a source's features live in ``teacher``'s space (its zero-shot and G mean something): a
    relviz student always; a feature set when its ``text_space`` names the teacher; a published checkpoint
    when its metadata's text space is the teacher's model and weights tag (OpenScene's: ViT-L-14-336,
    openai)."""
    if isinstance(model, FeatureSet):
        return text_space_matches(model.text_space, teacher.identity)
    if not meta.get("source_format"):
        return True
    space = meta.get("text_space") or {}
    return bool(space) and (space.get("name"), space.get("pretrained")) == \
        (getattr(teacher, "model_name", None), getattr(teacher, "pretrained", None))


def compare(checkpoints: list[str | Path], dataroot: str | Path, teacher, cache_root: str | Path,
            split: str = "mini_val", train_split: str = "mini_train", per_class: int = 5000, seed: int = 0,
            fewshot_fraction: float = 0.01, eval_set: EvalSet = EvalSet(per_scene=None), device="cpu",
            progress=None, backend: str = "torch", version: str = "v1.0-mini", n_resamples: int = 1000,
            confidence: float = 0.95, aggregation: str = DEFAULT_AGGREGATION) -> dict:
    """Every checkpoint and the teacher on the keyframes of ``split`` that ``eval_set`` selects (every
    keyframe of every scene by default) under the analysis protocol, with bootstrap intervals over
    scenes (``n_resamples``; 0: none; refused under 10 scenes, per-scene values instead); the paired
    difference of every two students; gap vs performance with 3 or more students (each checkpoint its
    own configuration). Returns {"rows", "paired", "evidence", "details", "protocol", "versions"}."""
    val = NuScenesLidarSeg(dataroot, version=version, split=split, load_images=False)
    train = NuScenesLidarSeg(dataroot, version=version, split=train_split, load_images=False, nusc=val.nusc)
    cache = FeatureCache(cache_root, teacher.identity)
    text = text_classifier(teacher, aggregation)
    entries, sums, details, teacher_structure = [], {}, {}, None
    for i, path in enumerate(checkpoints):
        path = Path(path)
        model, meta, source = _open_source(path, backend, device)
        feats = gather_val_features(model, teacher, cache, val, eval_set, device)
        label = path.stem if path.stem != "student" else path.parent.name
        in_space = in_teacher_space(model, meta, teacher)
        sums[label] = protocol_sums(feats, text if in_space else None, per_class, seed, teacher_space=in_space)
        structure = structure_result(sums[label], n_resamples, confidence)
        few = evaluate_fewshot(model, train, val, fewshot_fraction, device, seed)
        entries.append({"checkpoint": label, "loss": meta.get("loss"), "structure": structure, "fewshot": few,
                        "source": source})
        details[label] = {"checkpoint": str(path), "source": source, "structure": structure, "fewshot": few,
                          "sha256": None if path.is_dir() else file_sha256(path)}
        if teacher_structure is None:  # the teacher at the same paired points: its own structure, G = 0
            teacher_structure = structure_result(protocol_sums(teacher_view(feats), text, per_class, seed),
                                                 n_resamples, confidence)
            details["teacher"] = {"identity": teacher.identity, "structure": teacher_structure}
        if progress:
            progress(i + 1, len(checkpoints))
    rows = comparison_rows(entries, teacher_structure)
    paired = [{"a": a, "b": b, **paired_comparison(sums[a], sums[b], n_resamples, confidence)}
              for a, b in combinations(sums, 2)] if n_resamples else []
    evidence = gap_vs_performance(rows[:-1], rows[-1], confidence) if len(entries) >= MIN_CHECKPOINTS else None
    first = next(iter(sums.values())).description if sums else {}
    return {"rows": rows, "paired": paired, "evidence": evidence, "details": details,
            "protocol": {"version": version, "split": split, "eval_set": eval_set.as_dict(),
                         "keyframes": first.get("keyframes"), "scenes": first.get("scenes"),
                         "per_class": per_class, "seed": seed, "prompt_aggregation": aggregation,
                         "fewshot_fraction": fewshot_fraction, "train_split": train_split, "dataroot": str(dataroot),
                         "n_resamples": n_resamples, "confidence": confidence},
            "versions": {k: v for k, v in package_versions().items() if v}}


DIFFERENCE_METRICS = ("uniformity", "tolerance", "gap", "zeroshot_miou")


def stored_differences(results: Mapping[str, Mapping], confidence: float = 0.95,
                       metrics: Sequence[str] = DIFFERENCE_METRICS) -> list[dict]:
    """a - b for every two of ``results`` (label -> structure result on the same sample) and each of
    ``metrics``, from what the results store: with ``replicates`` (the same scene resamples for every
    checkpoint) a paired percentile interval and its bootstrap p, Holm-adjusted over every row here,
    and a verdict ("a higher", "a lower", "cannot be told from noise"); without them (fewer than 10
    scenes) the difference on each scene alone and the reason. Rows ``{"a", "b", "metric", "value",
    "low", "high", "p", "p_holm", "verdict", "per_scene", "note"}``."""
    import numpy as np

    from relviz.stats import holm, significance_level, two_sided_bootstrap_p

    rows = []
    for a, b in combinations(results, 2):
        ra, rb = results[a], results[b]
        if (ra.get("sample") or {}).get("id") != (rb.get("sample") or {}).get("id"):
            raise InputError(f"{a} and {b} were measured on different samples: no paired difference")
        for m in metrics:
            value = None if ra.get(m) is None or rb.get(m) is None else ra[m] - rb[m]
            pa, pb = (ra.get("per_scene") or {}).get(m), (rb.get("per_scene") or {}).get(m)
            per_scene = None if pa is None or pb is None else \
                [None if x is None or y is None else x - y for x, y in zip(pa, pb)]
            row = {"a": a, "b": b, "metric": m, "value": value, "low": None, "high": None, "p": None,
                   "per_scene": per_scene, "note": (ra.get("bootstrap") or {}).get("skipped")}
            reps_a, reps_b = ((r.get("replicates") or {}).get("values", {}).get(m) for r in (ra, rb))
            same = (ra.get("replicates") or {}).get("seed") == (rb.get("replicates") or {}).get("seed")
            if reps_a is not None and reps_b is not None and same and len(reps_a) == len(reps_b):
                d = np.array([np.nan if x is None or y is None else x - y for x, y in zip(reps_a, reps_b)])
                finite = d[np.isfinite(d)]
                alpha = (1 - confidence) / 2
                if len(finite) >= 2 and value is not None:
                    row.update(low=float(np.quantile(finite, alpha)), high=float(np.quantile(finite, 1 - alpha)),
                               p=two_sided_bootstrap_p(finite), note=None)
            rows.append(row)
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = adjusted
        if adjusted is None:
            row["verdict"] = "no interval"
        elif adjusted < significance_level(confidence):
            row["verdict"] = "a higher" if row["value"] > 0 else "a lower"
        else:
            row["verdict"] = "cannot be told from noise"
    return rows


# few-shot methods as experiment metrics are named "<method>@<fraction>" (e.g. "finetune@0.1"), and out of
# distribution "<method>@<fraction>@<dataset>" (e.g. "linear_probe@0.01@synthetic-kitti")
FEWSHOT_METHODS = {"linear_probe": "linear probe", "finetune": "fine-tuned"}


def fewshot_metric_name(method: str, fraction: str, dataset: str | None = None) -> str:
    """``<method>@<fraction>`` (``fraction`` as stored, e.g. "0.01"), with ``@<dataset>`` out of distribution."""
    return f"{method}@{fraction}" + (f"@{dataset}" if dataset else "")


def split_fewshot_metric(metric: str) -> tuple[str, float, str | None] | None:
    """(method, fraction, dataset) of a few-shot metric name (dataset None in distribution), None for
    any other name."""
    method, _, rest = metric.partition("@")
    fraction, _, dataset = rest.partition("@")
    if method not in FEWSHOT_METHODS:
        return None
    try:
        value = float(fraction)
    except ValueError:
        return None
    return method, value, dataset or None


def parse_fewshot_metric(metric: str) -> tuple[str, float] | None:
    """(method, fraction) of an in-distribution ``<method>@<fraction>`` metric name, None for any other
    name, out-of-distribution ones included (:func:`split_fewshot_metric` reads those): the claims and
    the experiment's label-efficiency curve stay on the runs' own dataset."""
    parsed = split_fewshot_metric(metric)
    return parsed[:2] if parsed is not None and parsed[2] is None else None


def format_mean_pm(summary: Mapping) -> str:
    """``0.368 ± 0.012`` (mean and half-width of an interval ``{"mean", "low", "high", "n"}``),
    ``0.368 (n=1)`` without an interval, ``-`` without a finite mean."""
    mean = summary.get("mean")
    if mean is None or not math.isfinite(mean):
        return "-"
    if summary.get("low") is None:
        return f"{mean:.3f} (n={summary.get('n')})"
    return f"{mean:.3f} ± {(summary['high'] - summary['low']) / 2:.3f}"


def cell_interval(summary: Mapping) -> Mapping:
    """The interval an experiment cell's metric is shown with: over seeds and scenes where the report
    has it (``scenes_and_seeds``), else its interval over seeds (``summary`` itself)."""
    return summary.get("scenes_and_seeds") or summary


def format_cell(summary: Mapping) -> str:
    """An experiment cell's metric for a table: ``mean ± half-width`` of :func:`cell_interval`, marked †
    when it is over seeds and scenes."""
    shown = cell_interval(summary)
    return format_mean_pm(shown) + (" †" if shown is not summary else "")


def format_p(p: float | None) -> str:
    """A p-value for a table: 3 decimals, scientific below 0.001, ``-`` for none."""
    return "-" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


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
    where = f"{p['version']} {p['split']}, {p['keyframes']} keyframes of {p['scenes']} scenes"
    refused = next((r["interval_refused"] for r in rows if r.get("interval_refused")), None)
    lines += ["", f"{where}. Values [low, high]: {p['confidence']:.0%} percentile bootstrap over scenes "
                  f"({p['n_resamples']} resamples)." if p.get("n_resamples") and not refused
              else f"{where}; no intervals" + (f" ({refused})." if refused else "."), "", "Samples:"] + sample_notes(rows)
    if refused:
        lines += ["", "Per scene (each scene alone):", ""]
        shown = [m for m in METRICS if m != "fewshot_miou"]
        lines += _table(["checkpoint", "scene"] + [HEADERS[m] for m in shown],
                        [[r["checkpoint"], str(s)] + [format_value(r["per_scene"][m][s]) for m in shown]
                         for r in rows if r.get("per_scene") for s in range(len(r["per_scene"]["uniformity"]))])
    paired = report.get("paired") or []
    if paired and paired[0]["differences"] is not None:
        cols = [m for m in METRICS if m in paired[0]["differences"]]
        lines += ["", "Paired differences (a - b, same scenes; * = the interval excludes 0; each at 95% on its own, "
                      "no multiple-comparison correction):", ""]
        lines += _table(["a - b"] + [HEADERS[m] for m in cols],
                        [[f"{d['a']} - {d['b']}"] + [format_value(x["value"], x["low"], x["high"], signed=True)
                                                      + (" *" if x["significant"] else "")
                                                      for x in (d["differences"][m] for m in cols)] for d in paired])
    elif paired:
        cols = [m for m in METRICS if m in paired[0]["per_scene"]]
        lines += ["", f"Paired differences per scene (a - b; no interval: {paired[0]['bootstrap']['skipped']}):", ""]
        lines += _table(["a - b", "scene"] + [HEADERS[m] for m in cols],
                        [[f"{d['a']} - {d['b']}", str(s)] + [format_value(d["per_scene"][m][s], signed=True)
                                                             for m in cols]
                         for d in paired for s in range(len(d["per_scene"]["uniformity"]))])
    evidence = report.get("evidence")
    if evidence:
        lines += ["", f"Gap vs performance over configurations ({evidence['confidence']:.0%} intervals; p by "
                      "permutation; within: the relation among runs of one configuration):", ""]
        lines += _table(["gap measure", "performance", "n", "Pearson r", "Spearman rho", "within r", "note"],
                        [[c["measure"], c["performance"], str(c["n"]), format_coefficient(c["pearson"], "r"),
                          format_coefficient(c["spearman"], "rho"),
                          "-" if not c.get("within") or c["within"].get("r") is None
                          else f"{c['within']['r']:+.2f} (n={c['within']['n']})", c.get("note") or ""]
                         for c in evidence["correlations"]])
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


__all__ = ["COLUMNS", "METRICS", "TEACHER", "compare", "comparison_rows", "format_value", "sample_notes",
           "stored_differences", "to_csv", "to_markdown", "write_report"]
