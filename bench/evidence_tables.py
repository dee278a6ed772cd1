"""The tables of docs/results.md's evidence section, printed from what is committed: the carried runs in
checkpoints/demo/evidence/ (each run's evaluation, with intervals over its 12 evaluation scenes) and
their report (checkpoints/demo/evidence/report/report.json: correlations, claims).

    .venv/bin/python bench/evidence_tables.py [--carried checkpoints/demo/evidence]

Per run: U, T, G and zero-shot mIoU (the structure on the 12 x 2 evaluated keyframes); few-shot mIoU
in distribution with its 95% percentile interval over the 12 scenes (conditional on the checkpoint);
out of distribution on the KITTI-format world (sequence 08: one drive, so no interval) and the drop
(in minus out, at 1%). Per configuration: the most U, T and zero-shot moved over the last 100 steps of
any of its runs (did the schedule settle?). Then the report's correlations, every claim with its
interval, p-values and the 3-seed demo table's verdict beside, and the out-of-distribution probe over
each configuration's seeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from relviz.eval.report import format_p, format_value
from relviz.experiment.aggregate import interval_over_seeds
from relviz.experiment.carry import read_gz


def _with_interval(result: dict | None) -> str:
    iv = (result or {}).get("miou_interval") or {}
    return format_value((result or {}).get("miou"), iv.get("low"), iv.get("high"))


CURVE_METRICS = ("uniformity", "tolerance", "zeroshot_miou")


def run_rows(carried: Path, ood_dataset: str = "synthetic-kitti-evidence") -> list[dict]:
    rows = []
    for path in sorted(carried.glob("c*.json.gz"), key=lambda p: (int(p.name.split("-")[0][1:]), p.name)):
        record = read_gz(path)
        e, s = record["evaluation"], record["evaluation"]["structure"]
        ood = (e.get("ood") or {}).get(ood_dataset) or {}
        last = sorted((c for c in record.get("curve") or [] if c.get("step") is not None), key=lambda c: c["step"])
        moved, final = {}, {}
        if len(last) >= 2:
            a, b = last[-2], last[-1]
            moved = {m: abs(b[m] - a[m]) for m in CURVE_METRICS if a.get(m) is not None and b.get(m) is not None}
            final = {m: b[m] for m in CURVE_METRICS if b.get(m) is not None}
        probe_in = ((e.get("linear_probe") or {}).get("0.01") or {}).get("miou")
        probe_out = ((ood.get("linear_probe") or {}).get("0.01") or {}).get("miou")
        rows.append({
            "run": record["key"], "cell": record["cell"], "seed": record["seed"],
            "U": s["uniformity"], "T": s["tolerance"], "G": s["gap"], "zs": s["zeroshot_miou"],
            **{f"probe {f}": _with_interval((e.get("linear_probe") or {}).get(f)) for f in ("0.01", "0.1", "1")},
            **{f"ft {f}": _with_interval((e.get("finetune") or {}).get(f)) for f in ("0.01", "0.1", "1")},
            **{f"ood {f}": ((ood.get("linear_probe") or {}).get(f) or {}).get("miou") for f in ("0.01", "0.1")},
            "probe_in": probe_in, "drop": None if probe_in is None or probe_out is None else probe_in - probe_out,
            "moved": moved, "final": final, "last_steps": [c["step"] for c in last[-2:]]})
    return rows


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carried", type=Path, default=Path("checkpoints/demo/evidence"))
    parser.add_argument("--demo-report", type=Path, default=Path("checkpoints/demo/experiment/report.json"),
                        help="the 3-seed, 2-scene demo experiment's report, whose claims are shown beside")
    args = parser.parse_args()
    rows = run_rows(args.carried)
    print("| run (cell) | seed | U | T | G | zero-shot | probe 1% | probe 10% | probe 100% | fine-tuned 1% | "
          "fine-tuned 10% | fine-tuned 100% | KITTI probe 1% | KITTI probe 10% | drop at 1% |")
    print("|---" * 15 + "|")
    for r in rows:
        print(f"| {r['cell']} | {r['seed']} | {_f(r['U'])} | {_f(r['T'])} | {_f(r['G'])} | {_f(r['zs'])} | "
              f"{r['probe 0.01']} | {r['probe 0.1']} | {r['probe 1']} | {r['ft 0.01']} | {r['ft 0.1']} | {r['ft 1']} | "
              f"{_f(r['ood 0.01'])} | {_f(r['ood 0.1'])} | {_f(r['drop'])} |")
    print("\n| cell | seeds | last validations | U moved, largest (seed spread at the end) | T moved, largest (spread) | "
          "zero-shot moved, largest (spread) |\n|---|---|---|---|---|---|")
    for cell in dict.fromkeys(r["cell"] for r in rows):
        mine = [r for r in rows if r["cell"] == cell and r["moved"]]
        if not mine:
            continue
        steps = sorted({" -> ".join(map(str, r["last_steps"])) for r in mine})
        cols = []
        for m in CURVE_METRICS:
            moved = [r["moved"][m] for r in mine if m in r["moved"]]
            ends = [r["final"][m] for r in mine if m in r["final"]]
            cols.append(f"{_f(max(moved) if moved else None)} ({_f(max(ends) - min(ends) if ends else None)})")
        print(f"| {cell} | {len(mine)} | {', '.join(steps)} | " + " | ".join(cols) + " |")
    report = json.loads((args.carried / "report" / "report.json").read_text())
    print("\n| gap measure | performance | configurations | Pearson r [95%] | p (permutation) | Spearman rho | "
          "within a configuration: r (runs, df) |\n|---|---|---|---|---|---|---|")
    for c in report["gap_vs_performance"].get("correlations", []):
        p, rho, w = c.get("pearson") or {}, c.get("spearman") or {}, c.get("within") or {}
        print(f"| {c['measure']} | {c['performance']} | {c['n']} | {_f(p.get('r'))} [{_f(p.get('low'))}, "
              f"{_f(p.get('high'))}] | {_f(p.get('p_permutation'))} | {_f(rho.get('rho'))} | "
              f"{_f(w.get('r'))} ({w.get('n', '-')}, {w.get('df', '-')}) |")
    print_claims(report, json.loads(args.demo_report.read_text()) if args.demo_report.is_file() else {})
    print_out_of_distribution(rows)


def _claim_key(text: str) -> str:
    """A claim's words without the unit the evidence experiment adds, to find the demo table's row."""
    return text.split(" (unit:")[0]


def _interval(claim: dict) -> str:
    two = claim.get("two_stage")
    if two and two.get("low") is not None and two["low"] == two["low"]:  # not NaN
        return f"[{two['low']:+.3f}, {two['high']:+.3f}] †"
    t = claim.get("t_interval")
    return f"[{t[0]:+.3f}, {t[1]:+.3f}]" if t else ""


def print_claims(report: dict, demo: dict) -> None:
    """Every claim of the family: verdict, estimate with its 95% interval (two-stage over seeds and
    scenes, †, where the runs stored scene resamples; else Student t over seeds), the test's p, Holm's,
    the sign-flip p over seeds, and the demo experiment's estimate and verdict for the same claim (3
    seeds, 2 scenes; its report as committed, whose family had no out-of-distribution rows)."""
    before = {_claim_key(c["claim"]): c for c in demo.get("claims") or []}
    print("\n| claim | verdict | estimate [95%] | p | p (Holm) | sign-flip p | demo: estimate, verdict |")
    print("|---|---|---|---|---|---|---|")
    for c in report.get("claims") or []:
        d = before.get(_claim_key(c["claim"]))
        then = "-" if d is None else f"{_f(d.get('estimate'))}, {d['verdict']}"
        print(f"| {c['claim']} | {c['verdict']} | {format_value(c.get('estimate'), signed=True)} {_interval(c)} | "
              f"{format_p(c.get('p'))} | {format_p(c.get('p_holm'))} | {format_p(c.get('p_sign'))} | {then} |")


def print_out_of_distribution(rows: list[dict]) -> None:
    """Per cell, over its seeds (Student t; the KITTI-format world's sequence 08 fixed): the probe at 1%
    in distribution, on the KITTI-format world, and the drop, each seed's drop paired."""
    def show(values: list[float]) -> str:
        iv = interval_over_seeds(values)
        return format_value(iv["mean"], iv["low"], iv["high"])

    print("\n| cell | seeds | probe 1% in distribution | KITTI probe 1% | KITTI probe 10% | drop at 1% |")
    print("|---|---|---|---|---|---|")
    for cell in dict.fromkeys(r["cell"] for r in rows):
        runs = [r for r in rows if r["cell"] == cell]
        mine = [r for r in runs if r["drop"] is not None]
        if len(mine) < len(runs):
            print(f"| {cell}: {len(runs) - len(mine)} run(s) without both probes, left out | | | | | |")
        if not mine:
            continue
        print(f"| {cell} | {len(mine)} | {show([r['probe_in'] for r in mine])} | {show([r['ood 0.01'] for r in mine])} | "
              f"{show([r['ood 0.1'] for r in mine])} | {show([r['drop'] for r in mine])} |")


if __name__ == "__main__":
    main()
