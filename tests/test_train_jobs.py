"""Training (loss goes down, exact resume, DDP parity) and background jobs (cancel, lost, restart)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import load_file

from support import TINY, wait_for
from relviz.config import load_settings
from relviz.jobs import JobError, JobStore
from relviz.train import Trainer, TrainConfig, TrainConfigError, from_dict, read_events

@pytest.fixture
def tiny(synthetic_root):
    return TrainConfig(**{**TINY, "dataset": str(synthetic_root)})


_wait = wait_for


def test_short_run_lowers_the_loss(tiny, tmp_path):
    cfg = from_dict({**tiny.to_dict(), "split": "mini_val", "max_steps": 16, "lr": 0.1})
    from relviz.config import load_settings
    from relviz.workspace import cache_finished_run

    settings = load_settings()
    result = Trainer(cfg, tmp_path / "run", settings, on_finish=cache_finished_run(settings)).run()
    assert result["status"] == "succeeded" and result["step"] == 16
    events, _ = read_events(tmp_path / "run" / "events.jsonl")
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    meta_file = tmp_path / "run" / "student.safetensors"
    from relviz.models.checkpoint import load_student

    model, meta = load_student(meta_file)
    assert meta["loss"] == "relational" and meta["step"] == 16 and "uniformity" in meta["metrics"]
    assert {"step", "epoch", "loss", "lr", "it_s", "eta_s", "mem_mb"} <= set(next(e for e in events if e["event"] == "step"))
    assert any(e["event"] == "val" and "zeroshot_miou" in e for e in events)
    # the finished run's features and metrics are already where the app reads them
    assert [e["event"] for e in events][-2:] == ["app_cache", "done"]
    from relviz import workspace
    from relviz.config import load_settings

    def fail():
        raise AssertionError("the app would have had to compute")

    info = workspace.CheckpointInfo("run", meta_file, "relational")
    m = workspace.structure(load_settings(), tiny.dataset, info, workspace.DEFAULT_EVAL_SET,
                            workspace.DEFAULT_PER_CLASS, 0, fail, fail)
    assert 0 <= m["zeroshot_miou"] <= 1 and m["sample_size"] > 0


def test_bad_configs_are_rejected(tiny):
    with pytest.raises(TrainConfigError, match="unknown loss 'cosine'"):
        from_dict({"loss": "cosine"})
    with pytest.raises(TrainConfigError, match="'lr': must be > 0"):
        from_dict({"lr": -0.1})
    with pytest.raises(TrainConfigError, match="unknown field.*epoch\\b"):
        from_dict({"epoch": 3})
    with pytest.raises(TrainConfigError, match="'batch' must be a number"):
        from_dict({"batch": "two"})
    with pytest.raises(TrainConfigError, match="dataset'.*does not exist"):
        Trainer(from_dict({**tiny.to_dict(), "dataset": "/nonexistent/data"}), "/tmp/unused-run", load_settings())
    with pytest.raises(JobError, match="does not exist"):
        JobStore(load_settings()).submit(from_dict({**tiny.to_dict(), "dataset": "/nonexistent/data"}))


def test_kill9_then_resume_continues_from_last_checkpoint(tiny):
    store = JobStore(load_settings())
    # mini_val (4 keyframes): a teacher cache of 24 images to prepare, not 96
    job = store.submit(from_dict({**tiny.to_dict(), "split": "mini_val", "max_steps": 24, "checkpoint_every": 3}))
    ckpt = job.run_dir / "checkpoints" / "last.safetensors"
    _wait(lambda: ckpt.is_file() and store.get(job.id).last_step >= 4)
    os.killpg(job.pgid, signal.SIGKILL)
    lost = _wait(lambda: (j := store.get(job.id)).status == "lost" and j)
    assert "without a final event" in lost.error
    # what is on disk is whole: the weights and the optimizer state of their step load
    from relviz.models.checkpoint import read_metadata

    saved_step = read_metadata(ckpt)["step"]
    state = torch.load(ckpt.parent / f"state-{saved_step:08d}.pt", weights_only=True)
    assert state["step"] == saved_step and saved_step % 3 == 0 and len(load_file(ckpt)) > 10
    store.resume(job.id)
    done = _wait(lambda: (j := store.get(job.id)).status in ("succeeded", "failed") and j, timeout=300)
    assert done.status == "succeeded", store.log_tail(done)
    events, _ = read_events(job.events_path)
    resumed = [e for e in events if e["event"] == "resumed"]
    assert resumed and resumed[-1]["step"] == saved_step
    steps_after = [e["step"] for e in events[events.index(resumed[-1]):] if e["event"] == "step"]
    assert steps_after[0] == saved_step + 1 and steps_after[-1] == 24


def test_cancel_ends_the_process_group(tiny):
    """Cancel is SIGTERM to the job's process group, DataLoader workers included (one here): they
    leave it to the trainer, which finishes its step, checkpoints and ends them."""
    store = JobStore(load_settings())
    job = store.submit(from_dict({**tiny.to_dict(), "max_steps": 500, "workers": 1}))
    _wait(lambda: store.get(job.id).last_step >= 1)
    cancelled = store.cancel(job.id, grace_s=60)
    assert cancelled.status == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pgid, 0)
    events, _ = read_events(job.events_path)
    assert events[-1]["event"] == "cancelled"  # graceful: checkpoint written, then the event
    assert (job.run_dir / "checkpoints" / "last.safetensors").is_file()
    with pytest.raises(JobError, match="only running jobs can be cancelled"):
        store.cancel(job.id)


def test_job_survives_restart_of_the_supervising_process(tiny, workspace_home):
    # a separate process submits and exits at once, as the app or the CLI would on restart
    out = subprocess.run([sys.executable, "-m", "relviz", "jobs", "submit", "--dataset", tiny.dataset,
                          "--set", "split=\"mini_val\"", "--arch", "MinkUNet14", "--width", "0.125",
                          "--pairs", "256", "--batch", "1", "--max-steps", "6",
                          "--set", "val_scenes=1", "--set", "val_per_scene=1", "--set", "val_per_class=50", "--set", "augment=false"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "RELVIZ_HOME": workspace_home})
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().splitlines()[-1]
    store = JobStore(load_settings())  # a fresh supervisor that did not launch the job
    running = store.get(job_id)
    assert running.status in ("running", "succeeded")
    done = _wait(lambda: (j := store.get(job_id)).status in ("succeeded", "failed", "lost") and j, timeout=300)
    assert done.status == "succeeded", store.log_tail(done)
    assert done.last_step == 6 and done.progress == 1.0 and done.checkpoint.name == "student.safetensors"
    # the log a person reads: a line per logged step and per validation, written as the run goes
    log = store.log_tail(done, 200)
    assert "step 6/6  loss " in log and "validation at step 6: " in log and "done" in log.splitlines()[-1], log
    listed = subprocess.run([sys.executable, "-m", "relviz", "jobs", "list", "--json"], capture_output=True, text=True,
                            env={**os.environ, "RELVIZ_HOME": workspace_home})
    assert json.loads(listed.stdout)[0]["status"] == "succeeded"


def _write_config(cfg: dict, run_dir) -> list[str]:
    run_dir.mkdir(exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg))
    return ["-m", "relviz.train", "--config", str(run_dir / "config.json"), "--run-dir", str(run_dir)]


def _torchrun(nproc: int, cfg: dict, run_dir, env: dict) -> None:
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           *_write_config(cfg, run_dir)], capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _start_two_nodes(train: list[str], run_dir, env: dict, attempt: int = 0) -> tuple[list, list]:
    """Two torchrun "nodes" of one process each, rendezvousing over TCP on localhost as two machines
    would (docs/distributed.md): node 0 hosts the store, both share the run folder as a cluster's
    shared filesystem would be. Returns the nodes and their log files."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs = [run_dir / f"node{rank}-{attempt}.log" for rank in (0, 1)]
    nodes = []
    for rank, log in enumerate(logs):
        with open(log, "w") as out:  # a file, not a pipe: a full pipe would block a node
            nodes.append(subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
                 "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}", *train],
                stdout=out, stderr=subprocess.STDOUT, text=True, env=env))
    return nodes, logs


def _end(nodes: list) -> None:
    """Kill what is left of the nodes' process trees (torchrun starts each rank in a session of its
    own, so a node's group is not enough) and reap the nodes."""
    for node in nodes:
        try:
            tree = psutil.Process(node.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for proc in [*tree, node]:
            try:
                proc.kill()
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        node.wait(timeout=30)


def _wait_nodes(nodes: list, timeout: float) -> list[int]:
    """Exit codes of both nodes; the first to fail ends the other (it would wait for its peer)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        codes = [node.poll() for node in nodes]
        if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
            return codes
        time.sleep(0.2)
    raise AssertionError(f"the nodes did not end within {timeout:.0f} s")


def _two_nodes(cfg: dict, run_dir, env: dict) -> None:
    """A run on two nodes to its end; a port taken between choosing and binding it is tried again."""
    train = _write_config(cfg, run_dir)
    for attempt in range(3):
        nodes, logs = _start_two_nodes(train, run_dir, env, attempt)
        try:
            codes = _wait_nodes(nodes, timeout=400)
        finally:
            _end(nodes)
        text = [log.read_text() for log in logs]
        if codes == [0, 0]:
            return
        if not any("address already in use" in x.lower() for x in text):
            break
    raise AssertionError(f"nodes exited {codes}: {text[0][-2000:]} / {text[1][-2000:]}")


def _assert_one_step_apart_by_averaging_only(a: dict, b: dict, init: dict) -> int:
    """``a`` and ``b`` took the same optimiser step from the same weights ``init``, differing only in how
    their micro-batch gradients were averaged; most parameters moved (returned: how many)."""
    params = [k for k in a if "running" not in k and "num_batches" not in k]
    assert a[params[0]].dtype == torch.float64
    moved = 0
    for k in params:
        update = (a[k] - init[k]).abs().max().item()
        # Each micro-batch's gradient is computed by the same code on the same thread count on both
        # sides; they differ only in how the two are averaged ((g1 + g2) / 2 by all-reduce against
        # g1/2 + g2/2 accumulated): one float64 rounding, u = 1.1e-16 relative to |g1| + |g2|. The
        # update is lr |g1 + g2| / 2, so the bound relative to it is u (|g1| + |g2|) / |g1 + g2|: 1e-9
        # holds unless the two micro-batches' gradients cancel to 1e-7 of their size over a whole
        # tensor, while a wrong micro-batch, a missing average or unsynchronised weights differ at order 1. The
        # second term covers the rounding of p0 - lr * g itself on each side (eps = 2.2e-16 of |p|).
        # On a later step the update also carries the momentum buffer and weight decay, the same
        # numbers on both sides (loaded from one checkpoint): the difference is still that one rounding.
        # (Measured on one machine: the two sides were bitwise equal.)
        assert (a[k] - b[k]).abs().max().item() <= 1e-9 * update + 2 * 2.2e-16 * a[k].abs().max().item(), k
        moved += update > 0
    assert moved > len(params) // 2  # the step did move the weights
    return moved


def test_ddp_on_two_nodes_matches_one_process_resumes_on_one_and_stops_together(tiny, tmp_path, workspace_home):
    """What DDP must make equal: one optimiser step of 2 ranks (here two torchrun nodes rendezvousing
    over TCP, as two machines would) with one micro-batch each equals one process that accumulates
    the same 2 micro-batches. And a 2-process run resumed on 1 process keeps its global batch
    (accumulate 1 -> 2): its next step equals the one the 2 processes take. Every side runs one
    thread per process (the same reduction order inside each micro-batch) and in float64. Last, a
    signal to one rank only stops both after the same step (:func:`_signal_one_rank_of_two`)."""
    base = {**tiny.to_dict(), "split": "mini_val", "max_steps": 1, "val_scenes": 1, "val_per_scene": 1, "checkpoint_every": 1,
            "val_every": 1000, "lr": 0.1, "precision": "float64", "device": "cpu"}  # float64: a CPU check
    env = {**os.environ, "RELVIZ_HOME": workspace_home, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    _torchrun(1, {**base, "accumulate": 2}, tmp_path / "one", env)  # fills the teacher cache too
    _two_nodes(base, tmp_path / "two", env)
    a = load_file(tmp_path / "one" / "student.safetensors")
    b = load_file(tmp_path / "two" / "student.safetensors")
    # the initial weights, built as the trainer builds them (seeded right before the model)
    from relviz.models import build_minkunet

    torch.manual_seed(base["seed"])
    init = build_minkunet(base["arch"], in_channels=1, out_channels=a["final.kernel"].shape[-1], width=base["width"],
                          normalize=True, backend="torch").double().state_dict()
    assert _assert_one_step_apart_by_averaging_only(a, b, init) > 0

    # the 2-process run continued for a second step: on 2 processes, and (a copy) on 1
    shutil.copytree(tmp_path / "two", tmp_path / "two-on-one")
    longer = {**base, "max_steps": 2}
    _torchrun(2, longer, tmp_path / "two", env)
    proc = subprocess.run([sys.executable, *_write_config(longer, tmp_path / "two-on-one")],
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events, _ = read_events(tmp_path / "two-on-one" / "events.jsonl")
    resumed = [e for e in events if e["event"] == "resumed"][-1]
    assert (resumed["step"], resumed["world_size_before"], resumed["world_size"], resumed["accumulate_before"],
            resumed["accumulate"]) == (1, 2, 1, 1, 2)
    assert [e["step"] for e in events[events.index(resumed):] if e["event"] == "step"] == [2]
    assert json.loads((tmp_path / "two-on-one" / "config.json").read_text())["accumulate"] == 2
    c = load_file(tmp_path / "two" / "student.safetensors")
    d = load_file(tmp_path / "two-on-one" / "student.safetensors")
    assert _assert_one_step_apart_by_averaging_only(c, d, b) > 0  # both stepped from step 1's weights, b

    # a stop requested on one rank only ends both after the same step (the teacher cache is warm now)
    _signal_one_rank_of_two(base, tmp_path / "signalled", env)


def _signal_one_rank_of_two(cfg: dict, run, env: dict) -> None:
    """SIGTERM to one rank's training process only (the extreme of a signal reaching the ranks at
    different moments): the ranks agree, both finish the same step and exit cleanly, rank 0
    checkpoints that step and the run ends "cancelled". A rank that stopped alone would leave the
    other waiting in the next step's all-reduce, and the nodes would not exit."""
    cfg = {**cfg, "max_steps": 10_000, "val_every": 100_000, "checkpoint_every": 100_000}
    nodes, logs = _start_two_nodes(_write_config(cfg, run), run, env)
    try:
        wait_for(lambda: (run / "events.jsonl").is_file() and any(
            e["event"] == "step" and e["step"] >= 2 for e in read_events(run / "events.jsonl")[0]),
            timeout=300, what="two steps on two nodes")
        # torchrun's own child (DataLoader workers, where there are any, are the rank's children)
        rank1 = [p for p in psutil.Process(nodes[1].pid).children() if "relviz.train" in p.cmdline()]
        assert len(rank1) == 1, [p.cmdline() for p in rank1]
        rank1[0].send_signal(signal.SIGTERM)
        codes = _wait_nodes(nodes, timeout=180)
    finally:
        _end(nodes)
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    from relviz.models.checkpoint import read_metadata

    events, _ = read_events(run / "events.jsonl")
    assert events[-1]["event"] == "cancelled" and 2 <= events[-1]["step"] < 10_000
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [events[-1]["step"]]
    assert read_metadata(run / "checkpoints" / "last.safetensors")["step"] == events[-1]["step"]


def test_resume_keeps_the_global_batch_or_refuses(tiny, tmp_path):
    """TrainConfig.resumed_on: accumulate converted to keep batch x accumulate x processes; a process
    count that cannot keep it, or another batch, refused with what would work."""
    one = from_dict({**tiny.to_dict(), "batch": 1, "accumulate": 1})
    assert one.resumed_on(1, {"batch": 1, "accumulate": 1}, saved_world=2, source="f").accumulate == 2
    assert one.resumed_on(2, {"batch": 1, "accumulate": 4}, saved_world=1, source="f").accumulate == 2
    # the same processes, a config written anew (a preset's accumulate 1 again): back to the run's 3
    assert one.resumed_on(1, {"batch": 1, "accumulate": 3}, saved_world=1, source="f").accumulate == 3
    with pytest.raises(TrainConfigError, match=r"f: saved by 3 process\(es\) with batch 1 x accumulate 1 = 3 keyframes "
                                               r"per step; on 2 process\(es\).*Resume on 1, 3 process\(es\)"):
        one.resumed_on(2, {"batch": 1, "accumulate": 1}, saved_world=3, source="f")

    # end to end: another batch is refused, and the folder's config is left as it was
    cfg = from_dict({**tiny.to_dict(), "split": "mini_val", "max_steps": 1, "val_scenes": 1, "val_per_scene": 1, "val_every": 1000,
                     "checkpoint_every": 1})
    run = tmp_path / "run"
    Trainer(cfg, run, load_settings()).run()
    before = (run / "config.json").read_bytes()
    with pytest.raises(TrainConfigError, match=r"saved with batch 1 .*this config's batch 2 would change what a step "
                                               r"is.*Resume with batch 1"):
        Trainer(from_dict({**cfg.to_dict(), "batch": 2, "max_steps": 2}), run, load_settings()).run()
    assert (run / "config.json").read_bytes() == before


# A training process that SIGKILLs itself at a chosen moment: the n-th atomic rename (a file fully
# written to its temporary name, not yet in place), the n-th checkpoint weights write (the temporary
# file cut to half its bytes first), or right after the n-th optimiser step (work since the last
# checkpoint lost). Monkeypatching in a driver keeps fault hooks out of the library.
_KILLER = r"""
import os, signal, sys
kind, n = sys.argv[1], int(sys.argv[2])
count = 0
def _tick():
    global count
    count += 1
    return count == n
def _die():
    os.kill(os.getpid(), signal.SIGKILL)
if kind == "rename":
    real_replace = os.replace
    def replace(a, b):
        if _tick():
            _die()
        return real_replace(a, b)
    os.replace = replace
elif kind == "write":
    import relviz.models.checkpoint as ck
    real_save = ck.save_file
    def save_file(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        if _tick():
            os.truncate(path, os.path.getsize(path) // 2)
            _die()
    ck.save_file = save_file
elif kind == "step":
    import torch
    real_step = torch.optim.SGD.step
    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        if _tick():
            _die()
        return out
    torch.optim.SGD.step = step
from relviz.train.trainer import main
sys.exit(main(sys.argv[3:]))
"""


def _assert_run_folder_whole(run_dir) -> None:
    """Every file a reader may open is complete: no half-written file outside temporaries."""
    from relviz.models.checkpoint import load_state_dict

    for path in run_dir.rglob("*"):
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.name == "events.jsonl":
            read_events(path)  # every complete line is JSON
        elif path.suffix == ".safetensors":
            load_state_dict(path)
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)


# a campaign (about a minute: one reference run and several killed, resumed ones), run on demand with
# `pytest -m campaign`; the suite keeps test_kill9_then_resume_continues_from_last_checkpoint
@pytest.mark.campaign
def test_kill9_at_random_moments_resumes_to_the_same_weights(tiny, tmp_path, workspace_home):
    cfg = {**tiny.to_dict(), "split": "mini_val", "max_steps": 6, "checkpoint_every": 1, "val_every": 0,
           "val_scenes": 1, "val_per_scene": 1}
    # the uninterrupted run, in this process with the same single thread the killed runs use
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(from_dict(cfg), tmp_path / "reference", load_settings()).run()
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "killed"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg))
    env = {**os.environ, "RELVIZ_HOME": workspace_home, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rng = np.random.default_rng(7)
    kills = []
    while len(kills) < 5:  # each kill is a fresh process (about 5 s of imports and resume)
        kind = str(rng.choice(["rename", "write", "step"]))
        n = int(rng.integers(1, 3 if kind == "write" else 4))
        proc = subprocess.run([sys.executable, "-c", _KILLER, kind, str(n), "--config", str(run / "config.json"),
                               "--run-dir", str(run)], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
        _assert_run_folder_whole(run)
        if proc.returncode == 0:  # the run finished before the chosen moment came
            assert (run / "student.safetensors").is_file()
            break
        kills.append((kind, n))
    if not (run / "student.safetensors").is_file():
        proc = subprocess.run([sys.executable, "-m", "relviz.train", "--config", str(run / "config.json"),
                               "--run-dir", str(run)], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(kills) >= 3, kills  # enough of the schedule landed inside the run
    a = load_file(tmp_path / "reference" / "student.safetensors")
    b = load_file(run / "student.safetensors")
    assert a.keys() == b.keys()
    # same code, same thread count, same data and pairs per step: resuming must be exact
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    events, _ = read_events(run / "events.jsonl")
    assert [e["event"] for e in events].count("resumed") >= 1 and events[-1]["event"] == "done"


def test_resume_keeps_metrics_and_refuses_another_runs_folder(tiny, tmp_path):
    from relviz.models.checkpoint import read_metadata

    cfg = from_dict({**tiny.to_dict(), "split": "mini_val", "max_steps": 2, "checkpoint_every": 1, "val_scenes": 1, "val_per_scene": 1})
    run = tmp_path / "run"
    first = Trainer(cfg, run, load_settings()).run()
    assert first["metrics"]
    # a kill between the last checkpoint and the final save: the resumed run ends with the same metrics
    (run / "student.safetensors").unlink()
    again = Trainer(cfg, run, load_settings()).run()
    stored = json.loads(json.dumps(first["metrics"]))  # as the checkpoint's JSON metadata holds them
    assert again["metrics"] == stored and read_metadata(run / "student.safetensors")["metrics"] == stored
    # another architecture in the same folder is refused, and the folder's config is left as it was
    before = (run / "config.json").read_bytes()
    with pytest.raises(TrainConfigError, match="holds a checkpoint of another run"):
        Trainer(from_dict({**cfg.to_dict(), "arch": "MinkUNet18"}), run, load_settings()).run()
    assert (run / "config.json").read_bytes() == before


def test_cancel_kills_what_the_job_started_in_other_sessions(workspace_home, tmp_path):
    """torchrun starts each rank in a session of its own: the group's SIGKILL misses them, so cancel
    also kills the job's descendants it listed before the signal."""
    store = JobStore(load_settings())
    script = tmp_path / "tree.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "rank = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'], start_new_session=True)\n"
        "print(rank.pid, flush=True)\n"
        "time.sleep(600)\n")
    root = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    rank = psutil.Process(int(root.stdout.readline()))
    assert os.getpgid(rank.pid) != root.pid  # the rank is in another group, as torchrun's are
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with store._connect() as con:  # recorded as submit records a running job
        con.execute("INSERT INTO jobs (id, name, status, config_json, run_dir, pid, pgid, proc_start, nproc, "
                    "created_at, started_at) VALUES ('tree', 'tree', 'running', '{}', ?, ?, ?, ?, 2, ?, ?)",
                    (str(run_dir), root.pid, root.pid, psutil.Process(root.pid).create_time(), time.time(), time.time()))
    store._children = {"tree": root}
    try:
        assert store.cancel("tree", grace_s=1.0).status == "cancelled"
        assert root.poll() is not None
        assert not rank.is_running() or rank.status() == psutil.STATUS_ZOMBIE  # killed (reaped by whoever adopted it)
    finally:
        for p in (rank, psutil.Process(root.pid) if root.poll() is None else None):
            if p is not None and p.is_running():
                p.kill()
