"""Few-shot label efficiency as a background job: one student checkpoint fine-tuned and linearly
probed at several label fractions (:func:`relviz.eval.finetune.label_efficiency`), launched, watched,
cancelled and resumed like a distillation job (:meth:`relviz.jobs.store.JobStore.submit_fewshot`).

Its run folder (:class:`relviz.train.rundir.RunDir`'s layout where they share a file):

    <run>/config.json              the FewshotJob (``kind`` = "label_efficiency")
    <run>/events.jsonl             priority, phase(prepare), fewshot(task, done, total, part, parts),
                                   heartbeat, then done / failed / cancelled
    <run>/train.log                stdout and stderr
    <run>/fewshot/<frames>.json    one finished selection of frames (fine-tuning with every seed, probe,
                                   their paired difference), so a cancelled or lost job resumes with the
                                   next one
    <run>/label_efficiency.json    the curve, once every fraction is done, with the dataset's folder name,
                                   ``format`` (nuscenes / semantickitti) and ``classes`` (so a page can
                                   tell in- from out-of-distribution curves)

Progress counts parts: each fine-tuning seed of a selection is one ("finetune 10%, seed 1"), its
probe another, so a selection is ``finetune_seeds`` + 1 parts. A SIGTERM (the store's cancel) or
SIGINT stops the job at the next progress call: what is finished stays, and the job ends with a
``cancelled`` event.
"""

from __future__ import annotations

import hashlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from relviz.data.kitti import FORMATS, SemanticKitti, default_splits, nuscenes_versions, resolve_format
from relviz.errors import InputError, RelvizError
from relviz.eval.finetune import FINETUNE_SEEDS, FRACTIONS, SLIDR_FINETUNE
from relviz.files import file_version, read_json, write_json
from relviz.train.rundir import EventLog, Heartbeat, RunDir

KIND = "label_efficiency"
RESULT = "label_efficiency.json"
PROGRESS_EVERY_S = 1.0  # a progress event at most this often (and at every task's first and last call)
def layout_defaults(dataroot: str | Path, layout: str, version: str = "v1.0-mini") -> tuple[str, str, str]:
    """(nuScenes version, val split, training split) a folder of ``layout`` is read with by default: a
    nuScenes folder holding one version other than ``version`` (a v1.0-trainval world) is read in that one
    (:func:`relviz.data.kitti.default_splits` names the splits)."""
    if layout == "nuscenes" and not (Path(dataroot) / version).is_dir():
        found = nuscenes_versions(dataroot)
        version = found[0] if len(found) == 1 else version
    return (version, *default_splits(layout, version))


def open_fewshot_splits(dataroot: str | Path, fmt: str = "auto", version: str = "v1.0-mini", split: str | None = None,
                        train_split: str | None = None) -> tuple[str, object, object]:
    """(layout, val set, training set) of a nuScenes dataroot or a SemanticKITTI folder, for few-shot:
    ``fmt`` auto / nuscenes / semantickitti; ``split`` and ``train_split`` None take the layout's
    :func:`layout_defaults` (``version`` is nuScenes'; both nuScenes splits share one table load)."""
    from relviz.data import NuScenesLidarSeg

    layout = resolve_format(dataroot, fmt)
    version, default_val, default_train = layout_defaults(dataroot, layout, version)
    split, train_split = split or default_val, train_split or default_train
    if layout == "semantickitti":
        return layout, SemanticKitti(dataroot, split), SemanticKitti(dataroot, train_split)
    val = NuScenesLidarSeg(dataroot, version=version, split=split, load_images=False)
    return layout, val, NuScenesLidarSeg(None, version=version, split=train_split, load_images=False, nusc=val.nusc)



@dataclass(frozen=True)
class FewshotJob:
    """What a few-shot job runs: ``checkpoint`` (a student file) scored on ``dataroot``'s
    ``version``/``split`` after fine-tuning (``epochs`` or ``steps`` of ``batch`` frames, SLidR's
    other values) and linear probing (``probe_epochs``, ``probe_per_class``) on each of ``fractions``
    of ``train_split`` (the format's frame rule: SLidR's scenes for nuScenes, every k-th scan for
    SemanticKITTI), with ``seed`` (the probe's, and the first of the ``finetune_seeds`` fine-tuning
    seeds ``seed``, ``seed`` + 1, ...), the sparse ``backend`` and ``device``. ``format``: the
    dataroot's layout, "auto" (detected), "nuscenes" or "semantickitti"; ``split`` and
    ``train_split`` None: the layout's defaults (:func:`layout_defaults`; ``version`` is nuScenes')."""

    checkpoint: str
    dataroot: str
    version: str = "v1.0-mini"
    split: str | None = None
    train_split: str | None = None
    fractions: tuple[float, ...] = FRACTIONS
    epochs: int = SLIDR_FINETUNE["epochs"]
    steps: int | None = None
    batch: int = SLIDR_FINETUNE["batch"]
    probe_epochs: int = 300
    probe_per_class: int = 20_000
    seed: int = 0
    finetune_seeds: int = FINETUNE_SEEDS
    backend: str = "torch"
    device: str = "cpu"
    format: str = "auto"

    def validate(self) -> FewshotJob:
        """This job with its values checked; InputError names the field and what was expected."""
        if not Path(self.checkpoint).is_file():
            raise InputError(f"checkpoint: {self.checkpoint} is not a file (expected a student .safetensors)")
        if not Path(self.dataroot).is_dir():
            raise InputError(f"dataroot: {self.dataroot} is not a folder (expected a nuScenes dataroot or "
                             f"SemanticKITTI folder)")
        if self.format not in FORMATS:
            raise InputError(f"format: expected one of {', '.join(FORMATS)}, got {self.format!r}")
        try:
            self.layout
        except InputError as e:  # neither layout, or both
            raise InputError(f"dataroot: {e}") from None
        for name in ("split", "train_split"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise InputError(f"{name}: expected a split name or None (the format's default), got "
                                 f"{getattr(self, name)!r}")
        if not self.fractions:
            raise InputError("fractions: give at least one label fraction, e.g. 0.01, 0.1, 1.0")
        for f in self.fractions:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 < f <= 1:
                raise InputError(f"fractions: {f!r} is not a fraction in (0, 1]")
        for name in ("epochs", "batch", "probe_epochs", "probe_per_class", "finetune_seeds") + (
                ("steps",) if self.steps is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: expected a whole number >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed: expected a whole number, got {self.seed!r}")
        return self

    def to_dict(self) -> dict:
        return {"kind": KIND, **asdict(self), "fractions": [float(f) for f in self.fractions]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "the job") -> FewshotJob:
        """The job of :meth:`to_dict`'s dict (``kind`` optional); unknown or missing fields are named."""
        values = {k: v for k, v in d.items() if k != "kind"}
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(values) - known):
            raise InputError(f"{source}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        if missing := [k for k in ("checkpoint", "dataroot") if k not in values]:
            raise InputError(f"{source}: missing field(s) {', '.join(missing)}")
        if "fractions" in values:
            if not isinstance(values["fractions"], (list, tuple)):
                raise InputError(f"{source}: fractions must be a list of numbers, got {values['fractions']!r}")
            values["fractions"] = tuple(values["fractions"])
        return cls(**values).validate()

    @property
    def layout(self) -> str:
        """The dataroot's format: ``format``, or the detected one for "auto"."""
        return resolve_format(self.dataroot, self.format)

    @property
    def splits(self) -> tuple[str, str]:
        """(val split, training split): the job's, or its layout's defaults for those left None (for a
        nuScenes folder of another version than v1.0-mini, :func:`open_fewshot_splits` takes val/train)."""
        _, val, train = layout_defaults(self.dataroot, self.layout, self.version)
        return self.split or val, self.train_split or train

    @property
    def seeds(self) -> list[int]:
        """The fine-tuning seeds: ``seed``, ``seed`` + 1, ... (``finetune_seeds`` of them)."""
        return list(range(self.seed, self.seed + self.finetune_seeds))

    @property
    def name(self) -> str:
        return f"few-shot {Path(self.checkpoint).stem}"


class Cancelled(RelvizError):
    """The job was asked to stop (SIGTERM or SIGINT): it ends ``cancelled``, not failed."""


def _selection_file(run: Path, frames: tuple[str, ...]) -> Path:
    return run / "fewshot" / (hashlib.sha1("\n".join(frames).encode()).hexdigest()[:16] + ".json")


def finished_selections(run: Path, job: FewshotJob, events: EventLog | None = None) -> dict[tuple[str, ...], dict]:
    """The selections of frames a previous launch finished, for the same checkpoint file (a changed
    file or an unreadable one is recomputed, with a ``fewshot_discarded`` event)."""
    version = file_version(job.checkpoint)
    out = {}
    for path in sorted((run / "fewshot").glob("*.json")):
        saved = read_json(path)  # None when damaged
        if not isinstance(saved, dict) or not isinstance(saved.get("frames"), list) \
                or not isinstance(saved.get("result"), dict):
            reason = "the file is damaged"
        elif saved.get("checkpoint_version") != version:
            reason = "computed with another version of the checkpoint file"
        elif (saved["result"].get("finetune") or {}).get("seeds") != job.seeds:
            reason = f"computed with other fine-tuning seeds than {job.seeds}"
        else:
            out[tuple(saved["frames"])] = saved["result"]
            continue
        if events is not None:  # recomputed, the reason recorded
            events.write("fewshot_discarded", file=path.name, reason=reason)
    return out


class _Progress:
    """The progress callback of :func:`label_efficiency`: ``fewshot`` events (throttled) and the stop."""

    def __init__(self, events: EventLog, stop: threading.Event, parts: int):
        self.events, self.stop, self.parts = events, stop, parts
        self.task, self.part, self.last = None, 0, 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.stop.is_set():
            raise Cancelled()
        task = phase.split(":")[0]  # "finetune 10%: train" -> the part "finetune 10%"
        if task != self.task:
            self.task, self.part = task, self.part + 1
        now = time.time()
        if done in (1, total) or now - self.last >= PROGRESS_EVERY_S:
            self.events.write("fewshot", task=phase, done=done, total=total, part=min(self.part, self.parts),
                              parts=self.parts)
            self.last = now


def run_fewshot_job(job: FewshotJob, run_dir: str | Path) -> dict:
    """Run ``job`` in ``run_dir`` (its events, saved selections and result, the module docstring);
    returns ``{"status": "succeeded" | "cancelled"}``; a failure is recorded and raised."""
    from relviz.eval.fewshot import class_names, selection
    from relviz.eval.finetune import label_efficiency
    from relviz.models.checkpoint import load_student

    run = Path(run_dir)
    events = EventLog(RunDir(run).events)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # a stop request ends the job at its next progress
        previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    heartbeat = Heartbeat(events).start()
    try:
        events.write("phase", phase="prepare")
        model, _ = load_student(job.checkpoint, backend=job.backend, device=job.device)
        layout, val, train = open_fewshot_splits(job.dataroot, job.format, job.version, job.split, job.train_split)
        finished = finished_selections(run, job, events)
        to_run = {tuple(selection(train, f)[1]["frames"]) for f in job.fractions} - set(finished)
        version = file_version(job.checkpoint)

        def save(frames: tuple[str, ...], result: dict) -> None:
            write_json(_selection_file(run, frames), {"frames": list(frames), "checkpoint_version": version,
                                                      "result": result})
            if stop.is_set():  # asked during a stretch without progress calls (a probe's training)
                raise Cancelled()

        if stop.is_set():  # asked while loading
            raise Cancelled()

        schedule = {"steps": job.steps} if job.steps is not None else {"epochs": job.epochs}
        parts = (len(job.seeds) + 1) * len(to_run)  # each fine-tuning seed, then the probe
        curve = label_efficiency(model, train, val, job.fractions, seed=job.seed, finetune_seeds=job.seeds,
                                 device=job.device, progress=_Progress(events, stop, parts),
                                 probe={"epochs": job.probe_epochs, "max_per_class": job.probe_per_class},
                                 finished=finished, on_finished=save, batch=job.batch, **schedule)
        classes = list(class_names(val)[1:])  # the dataset, so a curve can be told in or out of distribution
        write_json(run / RESULT, {"job": job.to_dict(), "val_frames": len(val), "dataset": Path(job.dataroot).name,
                                  "format": layout, "classes": classes, **curve})
        heartbeat.stop()
        events.write("done", result=RESULT, fractions=curve["fractions"], finetune=curve["finetune"],
                     finetune_seeds=curve["finetune_seeds"], linear_probe=curve["linear_probe"])
        return {"status": "succeeded"}
    except Cancelled:
        heartbeat.stop()
        events.write("cancelled", kept=len(list((run / "fewshot").glob("*.json"))))
        return {"status": "cancelled"}
    except Exception as e:
        heartbeat.stop()
        events.write("failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def read_result(run_dir: str | Path) -> dict | None:
    """A finished few-shot job's curve (:func:`run_fewshot_job`'s ``label_efficiency.json``), or None."""
    path = Path(run_dir) / RESULT
    return read_json(path) if path.is_file() else None


def main(config: str, run_dir: str) -> int:
    """``python -m relviz.jobs.run --kind label_efficiency --config <run>/config.json --run-dir <run>``."""
    d = read_json(config)
    if not isinstance(d, dict):
        raise InputError(f"{config}: expected a JSON object describing a few-shot job")
    job = FewshotJob.from_dict(d, source=config)
    return 0 if run_fewshot_job(job, run_dir)["status"] in ("succeeded", "cancelled") else 1
