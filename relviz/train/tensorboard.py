"""Training logs people read: TensorBoard scalars from the run's events, and the PCA embedding of a
validation sample in TensorBoard's projector format, both under ``<run>/tensorboard/``.

:class:`TensorBoardSink` is a sink of the run's :class:`~relviz.train.rundir.EventLog`: every event
the trainer writes reaches it, so the scalars are the numbers of ``events.jsonl`` (the record the
Jobs page reads), never a second bookkeeping. ``tensorboard --logdir <run>/tensorboard`` shows them.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F

from relviz.data.classes import CLASSES
from relviz.files import atomic_path

# per event: fields that index or describe the event rather than measure something
_NOT_SCALARS = {"step": {"step", "epoch", "total_steps", "eta_s"},
                "val": {"step", "val_keyframes", "val_scenes", "sample_size"}}
_RENAMED = {"it_s": "steps_per_s"}  # the throughput, named for a reader
_PER_CLASS = ("tolerance_per_class", "zeroshot_iou")  # {class index: value} fields of validation
_FLUSH_ON = {"val", "checkpoint", "done", "failed", "cancelled"}
PROJECTOR_TAG = "val_pca"


def event_scalars(record: dict) -> dict[str, float]:
    """The TensorBoard scalars of one event record: every number a ``step`` event measures under
    ``train/`` (loss, lr, steps_per_s, mem_mb, and any loss part the trainer adds), every number a
    ``val`` event measures under ``val/`` (U, T, G, zero-shot mIoU, ...), and its per-class values
    under ``val/<field>/<class name>``; other events have none."""
    event = record.get("event")
    if event not in _NOT_SCALARS:
        return {}
    prefix = "train" if event == "step" else "val"
    out = {}
    for name, value in record.items():
        if name in ("ts", "event") or name in _NOT_SCALARS[event]:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}/{_RENAMED.get(name, name)}"] = float(value)
        elif name in _PER_CLASS and isinstance(value, dict):
            out.update({f"{prefix}/{name}/{CLASSES[int(c)]}": float(v) for c, v in value.items()})
    return out


class TensorBoardSink:
    """Writes :func:`event_scalars` of every event to TensorBoard event files in ``log_dir``.

    The writer opens on the first event that has scalars or on ``start``; a ``start`` at step S > 0
    (a resumed run) opens it with ``purge_step = S + 1``, so TensorBoard hides what the killed run
    logged after its last checkpoint and the curves continue without a doubled stretch."""

    def __init__(self, log_dir: str | Path, flush_secs: int = 10):
        self.log_dir, self.flush_secs = Path(log_dir), flush_secs
        self._writer = None

    def _open(self, purge_step: int | None = None):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=purge_step, flush_secs=self.flush_secs)
        return self._writer

    def __call__(self, record: dict) -> None:
        if record.get("event") == "start":
            step = int(record.get("step") or 0)
            self._open(step + 1 if step > 0 else None)
        scalars = event_scalars(record)
        if scalars:
            writer = self._open()
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step=int(record["step"]), walltime=record.get("ts"))
        if self._writer is not None and record.get("event") in _FLUSH_ON:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def pca_embedding(student: torch.Tensor, teacher: torch.Tensor | None, components: int = 16
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Student features [N, D] (and the teacher's at the same points, [N, D]) L2-normalised and
    projected on the first ``components`` principal axes of the student's: ([N, k], [N, k] or None),
    k = min(components, N, D). The teacher shares the student's basis, so the modality gap shows."""
    from relviz.metrics import fit_pca

    student = F.normalize(student.float(), dim=1)
    pca = fit_pca(student, k=min(components, *student.shape))
    return pca.transform(student), (pca.transform(F.normalize(teacher.float(), dim=1)) if teacher is not None
                                    else None)


def write_projector(log_dir: str | Path, val: dict, step: int, per_class: int = 200, seed: int = 0,
                    components: int = 16) -> Path:
    """Write the student's and the teacher's features of a validation sample (up to ``per_class``
    labelled paired points per class, seeded: :func:`relviz.eval.structure.protocol_sample`) as a
    TensorBoard projector embedding at ``step``: ``<log_dir>/<step>/val_pca/tensors.tsv`` ([2S, k]
    PCA coordinates, :func:`pca_embedding`), ``metadata.tsv`` (class name and modality per row) and
    an entry in ``<log_dir>/projector_config.pbtxt`` (kept across resumed runs). Returns the folder."""
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    from relviz.eval.structure import protocol_sample

    idx = protocol_sample(val, per_class, seed)
    student, teacher = pca_embedding(val["pair_student"][idx], val["pair_teacher"][idx], components)
    classes = [CLASSES[int(c)] for c in val["pair_labels"][idx]]
    log_dir = Path(log_dir)
    sub = f"{step:05d}/{PROJECTOR_TAG}"
    folder = log_dir / sub
    with atomic_path(folder / "tensors.tsv") as tmp:
        np.savetxt(tmp, torch.cat([student, teacher]).cpu().numpy(), delimiter="\t", fmt="%.6g")
    rows = ["class\tmodality"] + [f"{c}\t{m}" for m in ("student", "teacher") for c in classes]
    with atomic_path(folder / "metadata.tsv") as tmp:
        Path(tmp).write_text("\n".join(rows) + "\n")
    config_path = log_dir / "projector_config.pbtxt"
    config = ProjectorConfig()
    if config_path.is_file():
        text_format.Parse(config_path.read_text(), config)
    name = f"{PROJECTOR_TAG}:{step:05d}"
    kept = [e for e in config.embeddings if e.tensor_name != name]  # a step validated again replaces its entry
    del config.embeddings[:]
    config.embeddings.extend(kept)
    entry = config.embeddings.add()
    entry.tensor_name, entry.tensor_path, entry.metadata_path = name, f"{sub}/tensors.tsv", f"{sub}/metadata.tsv"
    entry.tensor_shape.extend([2 * len(idx), student.shape[1]])
    with atomic_path(config_path) as tmp:
        Path(tmp).write_text(text_format.MessageToString(config))
    return folder


__all__ = ["PROJECTOR_TAG", "TensorBoardSink", "event_scalars", "pca_embedding", "write_projector"]
