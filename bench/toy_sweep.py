"""Where the paper's toy ordering holds: setups x target predictability x iterations x seeds.

The protocol (docs/toy.md) was fixed before the sweep ran: both paper setups, the input's
predictability R^2 in relviz.toy.PREDICTABILITIES, runs judged at relviz.toy.SWEEP_HORIZONS on the
mean of the last JUDGE_LAST recorded iterations, seeds 0-9, a cell's verdict by relviz.toy.cell_verdict.
One torch thread (the toy's tensors are tiny), run under `nice -n 10`:

    nice -n 10 .venv/bin/python bench/toy_sweep.py --out bench/toy_sweep.json --cache-dir /tmp/toy-cache

It writes the sweep's JSON (every seed's judged U and T per cell, the table, the time taken) and prints
the tables of docs/toy.md. ``--report FILE`` prints the tables of a stored JSON without training.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from relviz.toy import (JUDGE_LAST, PREDICTABILITIES, SWEEP_HORIZONS, SWEEP_SEEDS, run_predictability_sweep,
                        toy_setup)

SETUP_NAMES = ("paper-1cluster", "paper-3clusters")


def markdown(table: list[dict], claim_label: str) -> str:
    """One markdown table per setup: predictability down, iterations across, 'k/n [low, high]' cells."""
    out = []
    for setup in dict.fromkeys(row["setup"] for row in table):
        rows = [r for r in table if r["setup"] == setup]
        horizons = sorted({r["iteration"] for r in rows})
        out.append(f"**{setup}**: seeds (of {rows[0]['seeds']}) giving {claim_label}, "
                   f"[95% Clopper-Pearson interval]\n")
        out.append("| R^2 of the offset from the input | " + " | ".join(f"{h} it." for h in horizons) + " |")
        out.append("|---|" + "---|" * len(horizons))
        for p in dict.fromkeys(r["predictability"] for r in rows):
            cells = {r["iteration"]: r for r in rows if r["predictability"] == p}
            text = [f"{c['held']}/{c['seeds']} [{c['low']:.2f}, {c['high']:.2f}]" + (" **holds**" if c["verdict"] ==
                    "holds" else " *fails*" if c["verdict"] == "fails" else "") for c in (cells[h] for h in horizons)]
            out.append(f"| {p:g} | " + " | ".join(text) + " |")
        out.append("")
    return "\n".join(out)


def report(state: dict) -> None:
    print(markdown(state["table"], "the paper's U ordering"))
    print(markdown(state["table_relational_closest"], "relational closest"))
    print(markdown(state["table_similarity_T"], "similarity T above the source"))
    print(f"time: {state['cpu_s']:.0f} s CPU, {state['wall_s']:.0f} s wall ({state['machine']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/toy_sweep.json"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep each run (a rerun resumes)")
    parser.add_argument("--seeds", type=int, default=SWEEP_SEEDS)
    parser.add_argument("--report", type=Path, default=None, help="print the tables of a stored sweep and stop")
    args = parser.parse_args()
    if args.report is not None:
        report(json.loads(args.report.read_text()))
        return
    torch.set_num_threads(1)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    last_print = [0.0]

    def progress(phase: str, done: int, total: int) -> None:
        now = time.perf_counter() - start_wall
        if now - last_print[0] > 30 or done == total:
            last_print[0] = now
            print(f"{now:6.0f} s  {done}/{total}  {phase}", file=sys.stderr, flush=True)

    sweep = run_predictability_sweep({name: toy_setup(name) for name in SETUP_NAMES}, PREDICTABILITIES,
                                     SWEEP_HORIZONS, range(args.seeds), JUDGE_LAST, args.cache_dir, progress)
    state = {**sweep.to_json(), "table_relational_closest": sweep.table("relational_U_closest"),
             "table_similarity_T": sweep.table("similarity_T_above_source"),
             "cpu_s": time.process_time() - start_cpu, "wall_s": time.perf_counter() - start_wall,
             "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(state, indent=1))
    report(state)


if __name__ == "__main__":
    main()
