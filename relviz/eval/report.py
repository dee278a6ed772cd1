"""The comparison report: students side by side with the teacher (U, T, G, zero-shot, few-shot)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from relviz.data.dataset import NuScenesLidarSeg
from relviz.eval.fewshot import evaluate_fewshot
from relviz.eval.structure import gather_val_features, structure_metrics
from relviz.versions import package_versions
from relviz.models.checkpoint import file_sha256, load_student
from relviz.teacher.cache import FeatureCache

COLUMNS = ("name", "loss", "uniformity", "tolerance", "gap", "gap_text", "zeroshot_miou", "fewshot_miou")


def compare(checkpoints: list[str | Path], dataroot: str | Path, teacher, cache_root: str | Path,
            split: str = "mini_val", train_split: str = "mini_train", per_class: int = 5000, seed: int = 0,
            fewshot_fraction: float = 0.01, n_samples: int | None = None, device="cpu", progress=None,
            backend: str = "torch") -> dict:
    """Rows for every checkpoint and for the teacher's own features on the same points."""
    val = NuScenesLidarSeg(dataroot, split=split, load_images=False)
    train = NuScenesLidarSeg(dataroot, split=train_split, load_images=False, nusc=val.nusc)
    n = n_samples or len(val)
    cache = FeatureCache(cache_root, teacher.identity)
    text = teacher.class_embeddings().cpu()
    rows, details = [], {}
    teacher_row = None
    for i, path in enumerate(checkpoints):
        path = Path(path)
        model, meta = load_student(path, backend=backend, device=device)
        feats = gather_val_features(model, teacher, cache, val, n, device)
        m = structure_metrics(feats["features"], feats["labels"], feats["pair_student"], feats["pair_teacher"], text,
                              per_class, seed)
        few = evaluate_fewshot(model, train, val, fewshot_fraction, device, seed)
        rows.append({"name": path.stem if path.stem != "student" else path.parent.name, "loss": meta.get("loss"),
                     **{k: m[k] for k in ("uniformity", "tolerance", "gap", "gap_text", "zeroshot_miou")},
                     "fewshot_miou": few["miou"]})
        details[rows[-1]["name"]] = {"checkpoint": str(path), "sha256": file_sha256(path), "structure": m, "fewshot": few}
        if teacher_row is None:  # the teacher on the paired points: its own structure, G = 0 by definition
            t = structure_metrics(feats["pair_teacher"], feats["pair_labels"], feats["pair_teacher"],
                                  feats["pair_teacher"], text, per_class, seed)
            teacher_row = {"name": "teacher (2D, paired points)", "loss": "-",
                           **{k: t[k] for k in ("uniformity", "tolerance", "gap", "gap_text", "zeroshot_miou")},
                           "fewshot_miou": None}
            details["teacher"] = {"identity": teacher.identity, "structure": t}
        if progress:
            progress(i + 1, len(checkpoints))
    rows.append(teacher_row)
    return {"rows": rows, "details": details,
            "protocol": {"split": split, "val_samples": n, "per_class": per_class, "seed": seed,
                         "fewshot_fraction": fewshot_fraction, "train_split": train_split,
                         "dataroot": str(dataroot)},
            "versions": {k: v for k, v in package_versions().items() if v}}


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def to_markdown(report: dict) -> str:
    header = "| " + " | ".join(("checkpoint", "loss", "U", "T", "G (vs teacher)", "G (vs text)", "zero-shot mIoU",
                                 "few-shot mIoU")) + " |"
    lines = [header, "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in report["rows"]]
    p = report["protocol"]
    lines += ["", f"Split {p['split']} ({p['val_samples']} keyframes), up to {p['per_class']} points per class for U and "
                  f"T (seed {p['seed']}), few-shot probe on {p['fewshot_fraction']:.0%} of {p['train_split']} frames."]
    return "\n".join(lines) + "\n"


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    for r in report["rows"]:
        w.writerow({c: r[c] for c in COLUMNS})
    return buf.getvalue()


def write_report(report: dict, out_dir: str | Path) -> Path:
    """results.md, results.csv, report.json and an HTML bar chart per metric under ``out_dir``."""
    import plotly.graph_objects as go

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(to_markdown(report))
    (out / "results.csv").write_text(to_csv(report))
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    for metric in ("uniformity", "tolerance", "gap", "zeroshot_miou", "fewshot_miou"):
        rows = [r for r in report["rows"] if r[metric] is not None]
        fig = go.Figure(go.Bar(x=[r["name"] for r in rows], y=[r[metric] for r in rows]))
        fig.update_layout(title=metric, yaxis_title=metric)
        fig.write_html(out / f"{metric}.html", include_plotlyjs="cdn")
    return out


__all__ = ["compare", "to_markdown", "to_csv", "write_report"]
