"""The tables of docs/results.md's evidence section, printed from what is committed: the carried runs in
checkpoints/demo/evidence/ (each run's evaluation, with intervals over its 12 evaluation scenes) and
their report (checkpoints/demo/evidence/report/report.json: correlations, claims).

    .venv/bin/python bench/evidence_tables.py [--carried checkpoints/demo/evidence]

Per run: U, T, G and zero-shot mIoU (the structure on the 12 x 2 evaluated keyframes); few-shot mIoU
in distribution with its 95% percentile interval over the 12 scenes (conditional on the checkpoint);
out of distribution on the KITTI-format world (sequence 08: one drive, so no interval) and the drop
(in minus out, at 1%); how far U, T and zero-shot moved over the last 100 of the run's steps (did the
schedule settle?). Then the report's correlations and every claim's verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from relviz.experiment.carry import read_gz


def _with_interval(result: dict | None) -> str:
    if not result or result.get("miou") is None:
        return "-"
    iv = result.get("miou_interval")
    return f"{result['miou']:.3f}" + (f" [{iv['low']:.3f}, {iv['high']:.3f}]" if iv else "")


def run_rows(carried: Path) -> list[dict]:
    rows = []
    for path in sorted(carried.glob("c*.json.gz"), key=lambda p: (int(p.name.split("-")[0][1:]), p.name)):
        record = read_gz(path)
        e, s = record["evaluation"], record["evaluation"]["structure"]
        ood = next(iter((e.get("ood") or {}).values()), {})
        last = [c for c in record.get("curve") or [] if c.get("step") is not None]
        moved = {}
        if len(last) >= 2:
            a, b = last[-2], last[-1]
            moved = {m: abs(b[m] - a[m]) for m in ("uniformity", "tolerance", "zeroshot_miou") if m in a and m in b}
        probe_in = (e.get("linear_probe") or {}).get("0.01", {}).get("miou")
        probe_out = (ood.get("linear_probe") or {}).get("0.01", {}).get("miou")
        rows.append({
            "run": record["key"], "cell": record["cell"], "seed": record["seed"],
            "U": s["uniformity"], "T": s["tolerance"], "G": s["gap"], "zs": s["zeroshot_miou"],
            **{f"probe {f}": _with_interval((e.get("linear_probe") or {}).get(f)) for f in ("0.01", "0.1", "1")},
            **{f"ft {f}": _with_interval((e.get("finetune") or {}).get(f)) for f in ("0.01", "0.1", "1")},
            **{f"ood {f}": ((ood.get("linear_probe") or {}).get(f) or {}).get("miou") for f in ("0.01", "0.1")},
            "drop": None if probe_in is None or probe_out is None else probe_in - probe_out,
            "moved": moved, "last_steps": [c["step"] for c in last[-2:]]})
    return rows


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carried", type=Path, default=Path("checkpoints/demo/evidence"))
    args = parser.parse_args()
    rows = run_rows(args.carried)
    print("| run (cell) | seed | U | T | G | zero-shot | probe 1% | probe 10% | probe 100% | fine-tuned 1% | "
          "fine-tuned 10% | fine-tuned 100% | KITTI probe 1% | KITTI probe 10% | drop at 1% |")
    print("|---" * 15 + "|")
    for r in rows:
        print(f"| {r['cell']} | {r['seed']} | {_f(r['U'])} | {_f(r['T'])} | {_f(r['G'])} | {_f(r['zs'])} | "
              f"{r['probe 0.01']} | {r['probe 0.1']} | {r['probe 1']} | {r['ft 0.01']} | {r['ft 0.1']} | {r['ft 1']} | "
              f"{_f(r['ood 0.01'])} | {_f(r['ood 0.1'])} | {_f(r['drop'])} |")
    print("\n| run | last validations | U moved | T moved | zero-shot moved |\n|---|---|---|---|---|")
    for r in rows:
        m = r["moved"]
        print(f"| {r['run']} | {' -> '.join(map(str, r['last_steps']))} | {_f(m.get('uniformity'))} | "
              f"{_f(m.get('tolerance'))} | {_f(m.get('zeroshot_miou'))} |")
    report = json.loads((args.carried / "report" / "report.json").read_text())
    print("\n| gap measure | performance | n | Pearson r [95%] | p (permutation) |\n|---|---|---|---|---|")
    for c in report["gap_vs_performance"].get("correlations", []):
        p = c.get("pearson") or {}
        print(f"| {c['measure']} | {c['performance']} | {c['n']} | {_f(p.get('r'))} [{_f(p.get('low'))}, "
              f"{_f(p.get('high'))}] | {_f(p.get('p_permutation'))} |")
    print("\n| claim | verdict | estimate | p | p (Holm) |\n|---|---|---|---|---|")
    for c in report.get("claims") or []:
        print(f"| {c['claim']} | {c['verdict']} | {_f(c.get('estimate'))} | {_f(c.get('p'))} | {_f(c.get('p_holm'))} |")


if __name__ == "__main__":
    main()
