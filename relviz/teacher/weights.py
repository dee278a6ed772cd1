"""Teacher weight files from local paths, checked against the layout they were published in.

A file is read as a flat state dict (``.safetensors`` by safetensors, ``.pth``/``.pt``/``.bin`` by
``torch.load(weights_only=True)``; a ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper is
unwrapped) and compared, key by key and shape by shape, with every layout the teacher accepts. The
closest layout is the one the file is meant to be in; any missing, unexpected or misshapen key is
refused with a :class:`~relviz.teacher.base.TeacherWeightsError` naming the file, the layout and
the keys, never loaded partially and never replaced by random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from relviz.teacher.base import TeacherWeightsError

Layout = dict[str, tuple[int, ...]]  # key -> shape
SHOWN = 6  # keys named per kind of mismatch in an error message


def weights_file(path: str | Path, teacher: str) -> Path:
    """``path`` as an existing local file, else TeacherWeightsError saying what to give."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TeacherWeightsError(f"teacher {teacher}: weights file {p} not found; give the local path of the "
                                  f"published weights (nothing is downloaded)")
    return p


def read_state_dict(path: str | Path, teacher: str = "teacher") -> dict[str, torch.Tensor]:
    """The flat state dict {key: tensor} in a weights file."""
    p = weights_file(path, teacher)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, a pickle of arbitrary objects, not a checkpoint at all
        raise TeacherWeightsError(f"teacher {teacher}: cannot read weights file {p}: {type(e).__name__}: {e}") from e
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TeacherWeightsError(f"teacher {teacher}: {p} does not hold a state dict of tensors")
    return state


def layout_of(state: dict[str, torch.Tensor]) -> Layout:
    return {k: tuple(v.shape) for k, v in state.items()}


def _mismatch(state: Layout, layout: Layout) -> tuple[list[str], list[str], dict[str, tuple]]:
    missing = [k for k in layout if k not in state]
    unexpected = [k for k in state if k not in layout]
    shapes = {k: (state[k], layout[k]) for k in layout if k in state and tuple(state[k]) != tuple(layout[k])}
    return missing, unexpected, shapes


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def check_layout(state: dict[str, torch.Tensor], layouts: dict[str, Layout], path: str | Path, teacher: str) -> str:
    """The name of the layout in ``layouts`` that ``state`` matches exactly, else TeacherWeightsError
    naming the file, the closest layout (most keys in common) and its missing, unexpected and
    misshapen keys."""
    have = layout_of(state)
    for name, layout in layouts.items():
        if not any(_mismatch(have, layout)):
            return name
    closest = max(layouts, key=lambda name: len(have.keys() & layouts[name].keys()))
    missing, unexpected, shapes = _mismatch(have, layouts[closest])
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_names(unexpected)}")
    if shapes:
        problems.append("wrong shape: " + ", ".join(f"{k} is {list(a)}, expected {list(b)}"
                                                    for k, (a, b) in list(shapes.items())[:SHOWN]))
    others = [n for n in layouts if n != closest]
    raise TeacherWeightsError(
        f"teacher {teacher}: weights file {path} does not match the {closest} layout it is closest to "
        f"({len(layouts[closest])} keys, e.g. {_example(layouts[closest])}): {'; '.join(problems)}"
        + (f". Also accepted: {', '.join(others)}" if others else ""))


def _example(layout: Layout) -> str:
    return ", ".join(f"{k} {list(v)}" for k, v in list(layout.items())[:2])


__all__ = ["Layout", "check_layout", "layout_of", "read_state_dict", "weights_file"]
