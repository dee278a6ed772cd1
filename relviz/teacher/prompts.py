"""Class prompts: OpenScene's 43 nuScenes detail names mapped many-to-one onto the 16 classes; free
text under the same templates; the words the demo teacher was trained on."""

from __future__ import annotations

import re

from relviz.data.classes import CLASSES

# merged class -> detail names (OpenScene's MAPPING_NUSCENES_DETAILS)
DETAIL_PROMPTS: dict[str, tuple[str, ...]] = {
    "barrier": ("barrier", "barricade"),
    "bicycle": ("bicycle",),
    "bus": ("bus",),
    "car": ("car",),
    "construction_vehicle": ("bulldozer", "excavator", "concrete mixer", "crane", "dump truck"),
    "motorcycle": ("motorcycle",),
    "pedestrian": ("person", "pedestrian"),
    "traffic_cone": ("traffic cone",),
    "trailer": ("trailer", "semi trailer", "cargo container", "shipping container", "freight container"),
    "truck": ("truck",),
    "driveable_surface": ("road",),
    "other_flat": ("curb", "traffic island", "traffic median"),
    "sidewalk": ("sidewalk",),
    "terrain": ("grass", "grassland", "lawn", "meadow", "turf", "sod"),
    "manmade": ("building", "wall", "pole", "awning"),
    "vegetation": ("tree", "trunk", "tree trunk", "bush", "shrub", "plant", "flower", "woods"),
}
assert tuple(DETAIL_PROMPTS) == CLASSES[1:]

# OpenScene's template first; the others are MaskCLIP/CLIP2Scene-style scene templates.
TEMPLATES: tuple[str, ...] = ("a {} in a scene", "a photo of a {}", "there is a {} in the scene",
                              "this is a {} in the scene")


def class_prompts(templates: tuple[str, ...] = TEMPLATES) -> dict[str, list[str]]:
    """Every prompt of every class: details x templates."""
    return {c: [t.format(d) for d in details for t in templates] for c, details in DETAIL_PROMPTS.items()}


def detail_names() -> list[str]:
    return [d for details in DETAIL_PROMPTS.values() for d in details]


# ------------------------------------------------------------------------------- free text
_CLASS_BY_NAME = {c.replace("_", " "): c for c in DETAIL_PROMPTS}
# the pieces CLIP's tokenizer splits text into before BPE: letter runs, single digits, other symbols
_WORD = re.compile(r"[^\W\d_]+|\d|(?:[^\w\s]|_)+")


def class_named(text: str) -> str | None:
    """The merged class ``text`` names (``Car``, ``driveable surface``, ``Driveable_Surface``), or None."""
    return _CLASS_BY_NAME.get(" ".join(text.replace("_", " ").split()).lower())


def prompt_ensemble(prompt: str, templates: tuple[str, ...] = TEMPLATES) -> list[str]:
    """The texts whose embeddings are averaged for ``prompt``: for a class name, its detail names x
    templates (the ensemble of :meth:`ClipTeacher.class_embeddings`); for any other text, the text
    itself under every template."""
    cls = class_named(prompt)
    return class_prompts(templates)[cls] if cls else [t.format(prompt) for t in templates]


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` as CLIP's tokenizer separates them (letter runs, digits,
    runs of other symbols such as punctuation or emoji)."""
    return _WORD.findall(text.lower())


def demo_vocabulary(templates: tuple[str, ...] = TEMPLATES) -> frozenset[str]:
    """Every word the demo teacher read in training: its prompts are one detail name of each class
    under one template (:func:`relviz.teacher.demo.train_demo_teacher`)."""
    template_words = {w for t in templates for w in words(t.format(""))}
    return frozenset(template_words | {w for d in detail_names() for w in words(d)})
