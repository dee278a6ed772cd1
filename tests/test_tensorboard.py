"""TensorBoard logs of a run: the scalars of its events (read back with TensorBoard's own reader), a
resumed run's curves without a doubled stretch, the PCA embedding in the projector's format, and
an event log that a failing sink never stops."""

import numpy as np
import torch
from google.protobuf import text_format
from sklearn.decomposition import PCA as SkPCA
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from relviz.data.classes import CLASSES
from relviz.train.rundir import EventLog, RunDir, read_events
from relviz.train.tensorboard import PROJECTOR_TAG, TensorBoardSink, event_scalars, write_projector


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _steps(log: EventLog, steps, loss_of) -> list[dict]:
    """Write ``step`` events as the trainer does; returns the fields written."""
    written = []
    for s in steps:
        fields = dict(step=s, epoch=s // 4, loss=loss_of(s), lr=0.5 / s, it_s=1.25 * s, eta_s=10.0, mem_mb=100 + s,
                      total_steps=8)
        log.write("step", **fields)
        written.append(fields)
    return written


def test_the_events_scalars_are_in_the_event_files(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    log = EventLog(run.events, sinks=[TensorBoardSink(run.tensorboard)])
    log.write("phase", phase="prepare")
    log.write("start", step=0, total_steps=8)
    written = _steps(log, range(1, 5), lambda s: 2.0 / s)
    log.write("heartbeat")
    val = dict(step=4, uniformity=1.53, tolerance=0.71, gap=0.42, gap_all_pairs=0.4, zeroshot_miou=0.27,
               tolerance_per_class={4: 0.8, 11: 0.6}, zeroshot_iou={"4": 0.5}, val_keyframes=4, val_scenes=2, sample_size=99,
               sample={"seed": 0, "per_class": 500})
    log.write("val", **val)
    log.write("done", step=4)
    log.close()

    got = _scalars(run.tensorboard)
    # TensorBoard stores a scalar as float32: each value must be the float32 rounding of what was logged
    for name, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("it_s", "train/steps_per_s"),
                      ("mem_mb", "train/mem_mb")):
        assert got[tag] == [(f["step"], float(np.float32(f[name]))) for f in written], tag
    for name in ("uniformity", "tolerance", "gap", "gap_all_pairs", "zeroshot_miou"):
        assert got[f"val/{name}"] == [(4, float(np.float32(val[name])))]
    assert got["val/tolerance_per_class/car"] == [(4, float(np.float32(0.8)))]
    assert got["val/tolerance_per_class/driveable_surface"] == [(4, float(np.float32(0.6)))]
    assert got["val/zeroshot_iou/car"] == [(4, float(np.float32(0.5)))]  # keys read back from JSON are strings
    # indices and bookkeeping are not curves
    assert not {"train/step", "train/epoch", "train/eta_s", "train/total_steps", "val/val_keyframes", "val/val_scenes",
                "val/sample_size"} & set(got)
    # the JSONL record the Jobs page reads is unchanged by the sink
    events, _ = read_events(run.events)
    assert [e["event"] for e in events] == ["phase", "start", "step", "step", "step", "step", "heartbeat", "val", "done"]


def test_a_resumed_run_continues_the_curves_from_its_checkpoint(tmp_path):
    """The killed run logged steps 1..5 but checkpointed at 3; the resumed run starts at 3 and logs
    4..6: TensorBoard shows 1..3 of the first and 4..6 of the second, each step once."""
    log_dir = tmp_path / "tb"
    first = EventLog(tmp_path / "events.jsonl", sinks=[TensorBoardSink(log_dir)])
    first.write("start", step=0)
    _steps(first, range(1, 6), float)
    first.write("checkpoint", step=5)  # flushes; the process is then killed without closing
    second = EventLog(tmp_path / "events.jsonl", sinks=[TensorBoardSink(log_dir)])
    second.write("start", step=3)
    _steps(second, range(4, 7), lambda s: 10.0 + s)
    second.close()
    assert _scalars(log_dir)["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 15.0), (6, 16.0)]


def test_event_scalars_of_other_events_are_empty():
    assert event_scalars({"event": "heartbeat", "ts": 1.0}) == {}
    assert event_scalars({"event": "prepare", "done": 3, "total": 9}) == {}
    assert event_scalars({"event": "step", "step": 2, "loss": 1, "converged": True}) == {"train/loss": 1.0}


def _planted_val(n_per_class: int = 40, dim: int = 24, seed: int = 0) -> dict:
    """A validation dict (the keys write_projector reads) whose student features have three
    well-separated principal variances (3, 2, 1 along orthogonal axes) plus small noise, so that the
    principal axes are well conditioned; the teacher's are the student's, perturbed."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 4, 11, 16]).repeat_interleave(n_per_class)[torch.randperm(4 * n_per_class, generator=g)]
    axes = torch.linalg.qr(torch.randn(dim, 3, generator=g, dtype=torch.float64))[0].T.float()  # [3, D]
    coords = torch.randn(len(labels), 3, generator=g) * torch.tensor([3.0, 2.0, 1.0])
    student = coords @ axes + 0.01 * torch.randn(len(labels), dim, generator=g) + 5 * axes[0]
    teacher = student + 0.3 * torch.randn(len(labels), dim, generator=g)
    return {"pair_student": student, "pair_teacher": teacher, "pair_labels": labels}


def test_the_pca_embedding_is_written_in_the_projector_format(tmp_path):
    val = _planted_val()
    folder = write_projector(tmp_path, val, step=7, per_class=10_000, components=3)  # every labelled point
    config = text_format.Parse((tmp_path / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (entry,) = config.embeddings
    assert (tmp_path / entry.tensor_path).parent == folder == tmp_path / "00007" / PROJECTOR_TAG
    tensors = np.loadtxt(tmp_path / entry.tensor_path, delimiter="\t")
    meta = (tmp_path / entry.metadata_path).read_text().splitlines()

    # reference: the labelled points sorted by class then index, L2-normalised, sklearn's PCA of the
    # student's, the teacher projected on the same axes
    labels = val["pair_labels"].numpy()
    idx = np.concatenate([np.flatnonzero(labels == c) for c in (4, 11, 16)])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    s, t = unit(val["pair_student"].double().numpy()[idx]), unit(val["pair_teacher"].double().numpy()[idx])
    pca = SkPCA(n_components=3).fit(s)
    ref = np.concatenate([pca.transform(s), (t - pca.mean_) @ pca.components_.T])
    assert list(entry.tensor_shape) == [2 * len(idx), 3] and tensors.shape == ref.shape
    # axis signs are conventions: align each column's sign on the student rows, then compare
    sign = np.sign((tensors[:len(idx)] * ref[:len(idx)]).sum(0))
    # |values| <= 2 (unit vectors, centred); written with 6 significant digits: <= 1e-5; float32
    # projection over D = 24 terms: gamma(24) * 2 ~ 3e-6; axes from a float64 eigensolver with
    # eigengaps >= ~0.1 of the normalised data, cast to float32: ~1e-7 each. 1e-4: ~8x the sum.
    np.testing.assert_allclose(tensors * sign, ref, atol=1e-4)
    assert meta[0] == "class\tmodality"
    assert meta[1:] == [f"{CLASSES[labels[i]]}\t{m}" for m in ("student", "teacher") for i in idx]


def test_a_step_validated_again_replaces_its_embedding_and_others_stay(tmp_path):
    val = _planted_val(n_per_class=5, dim=8)
    for step in (3, 6, 6):  # step 6 again, as a resumed run validating the same step
        write_projector(tmp_path, val, step=step, per_class=100, components=2)
    config = text_format.Parse((tmp_path / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == [f"{PROJECTOR_TAG}:00003", f"{PROJECTOR_TAG}:00006"]


def test_a_failing_sink_is_dropped_and_the_log_goes_on(tmp_path):
    calls = []

    def broken(record):
        calls.append(record["event"])
        raise OSError("disk full")

    log = EventLog(tmp_path / "events.jsonl", sinks=[broken])
    log.write("start", step=0)
    log.write("step", step=1, loss=1.0)
    events, _ = read_events(tmp_path / "events.jsonl")
    assert [e["event"] for e in events] == ["start", "sink_failed", "step"]
    assert "disk full" in events[1]["error"] and calls == ["start"]  # dropped after its first failure


def test_a_disabled_log_feeds_no_sink(tmp_path):
    """Ranks other than 0 keep a disabled log: no line, no sink call."""
    seen = []
    EventLog(tmp_path / "e.jsonl", enabled=False, sinks=[seen.append]).write("step", step=1, loss=1.0)
    assert seen == [] and not (tmp_path / "e.jsonl").exists()
