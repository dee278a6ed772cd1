"""Free-text prompts for a teacher: embedded under the class templates, cached per prompt string,
and checked against what the teacher has read (the demo teacher only knows its training prompts)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F

from relviz.config import TeacherSpec
from relviz.errors import InputError
from relviz.teacher.prompts import TEMPLATES, class_named, demo_vocabulary, prompt_ensemble, words

CACHE_SIZE = 4096  # prompts kept (a 512-d embedding is 2 KiB): the app embeds one per keystroke
_cache: OrderedDict[tuple[str, tuple[str, ...], str], torch.Tensor] = OrderedDict()
_cache_lock = threading.Lock()


def embed_queries(teacher, prompts: list[str] | tuple[str, ...], templates: tuple[str, ...] = TEMPLATES
                  ) -> torch.Tensor:
    """Text embeddings [P, D] (float32, on the CPU) of any prompts: per prompt, the L2-normalised mean
    of the normalised embeddings of :func:`prompt_ensemble` (so a class name gives exactly its row of
    ``teacher.class_embeddings(templates)``, and free text the same templates). Kept in an LRU cache
    keyed by (teacher identity, templates, prompt); only the prompts not there are encoded, in one
    batch, so a repeated prompt costs nothing and the teacher is not loaded."""
    if isinstance(prompts, str) or not prompts:
        raise InputError("embed_queries expects a non-empty list of prompts")
    identity = teacher.identity
    found: dict[str, torch.Tensor] = {}
    with _cache_lock:
        for p in prompts:
            key = (identity, tuple(templates), p)
            if key in _cache:
                _cache.move_to_end(key)
                found[p] = _cache[key]
    missing = list(dict.fromkeys(p for p in prompts if p not in found))
    if missing:
        ensembles = [prompt_ensemble(p, templates) for p in missing]
        emb = teacher.encode_text([text for ensemble in ensembles for text in ensemble])
        start = 0
        for p, ensemble in zip(missing, ensembles):
            found[p] = F.normalize(emb[start:start + len(ensemble)].mean(0), dim=0).cpu()
            start += len(ensemble)
        with _cache_lock:
            for p in missing:
                _cache[(identity, tuple(templates), p)] = found[p]
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return torch.stack([found[p] for p in prompts])


def clear_query_cache() -> None:
    """Forget every cached prompt embedding."""
    with _cache_lock:
        _cache.clear()


def teacher_vocabulary(teacher) -> frozenset[str] | None:
    """The words a teacher has read: the demo teacher's training prompts (:func:`demo_vocabulary`), or
    None for an open_clip teacher, whose tokenizer and training cover any text. ``teacher``: a
    :class:`TeacherSpec` (nothing is loaded) or a loaded teacher."""
    from relviz.teacher.demo import DEMO_MODEL

    if isinstance(teacher, TeacherSpec):
        is_demo = teacher.name == "demo"
    else:  # a teacher's identity starts with its open_clip model name (the demo teacher's without loading it)
        is_demo = teacher.identity.startswith(f"{DEMO_MODEL}-")
    return demo_vocabulary() if is_demo else None


def unseen_words(prompt: str, vocabulary: frozenset[str] | None) -> tuple[str, ...]:
    """The words of ``prompt`` outside ``vocabulary`` (each once, in order); none for an open
    vocabulary (None) or for a class name, which is embedded by its detail names."""
    if vocabulary is None or class_named(prompt):
        return ()
    return tuple(dict.fromkeys(w for w in words(prompt) if w not in vocabulary))
