"""Class prompts: OpenScene's 43 nuScenes detail names mapped many-to-one onto the 16 classes; how
a class's detail names become one decision (the prompt aggregation); free text under the same
templates; the words the demo teacher was trained on."""

from __future__ import annotations

import re

from relviz.data.classes import CLASSES
from relviz.data.kitti_classes import KITTI_CLASSES
from relviz.errors import InputError, shorten

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

# SemanticKITTI's 19 learning classes -> the names prompted for each: the raw labels the learning map sends
# to the class, as semantic-kitti-api's config/semantic-kitti.yaml names them (`labels`, `learning_map`;
# relviz/data/kitti_classes.py holds the table), hyphens as spaces and the "moving-" duplicates left out.
# No published zero-shot SemanticKITTI prompt list was checked: these are the dataset's own words.
KITTI_PROMPTS: dict[str, tuple[str, ...]] = {
    "car": ("car",), "bicycle": ("bicycle",), "motorcycle": ("motorcycle",), "truck": ("truck",),
    "other-vehicle": ("bus", "on rails", "other vehicle"), "person": ("person",), "bicyclist": ("bicyclist",),
    "motorcyclist": ("motorcyclist",), "road": ("road", "lane marking"), "parking": ("parking",),
    "sidewalk": ("sidewalk",), "other-ground": ("other ground",), "building": ("building",), "fence": ("fence",),
    "vegetation": ("vegetation",), "trunk": ("trunk",), "terrain": ("terrain",), "pole": ("pole",),
    "traffic-sign": ("traffic sign",),
}
assert tuple(KITTI_PROMPTS) == KITTI_CLASSES[1:]

# OpenScene's template first; the others are MaskCLIP/CLIP2Scene-style scene templates.
TEMPLATES: tuple[str, ...] = ("a {} in a scene", "a photo of a {}", "there is a {} in the scene",
                              "this is a {} in the scene")


# OpenScene's nuScenes evaluation reads each detail name under this one template and no other
# (`prompt_eng: True` in config/nuscenes/ours_openseg*.yaml -> util.util.extract_text_feature).
OPENSCENE_TEMPLATES: tuple[str, ...] = TEMPLATES[:1]


def class_prompts(templates: tuple[str, ...] = TEMPLATES) -> dict[str, list[str]]:
    """Every prompt of every class: details x templates."""
    return {c: [t.format(d) for d in details for t in templates] for c, details in DETAIL_PROMPTS.items()}


def detail_names() -> list[str]:
    """The 43 detail names in OpenScene's order (``NUSCENES_LABELS_DETAILS``), class by class."""
    return [d for details in DETAIL_PROMPTS.values() for d in details]


def detail_prompts(templates: tuple[str, ...] = TEMPLATES) -> dict[str, list[str]]:
    """Every prompt of every detail name (in :func:`detail_names` order): the name under each template."""
    return {d: [t.format(d) for t in templates] for d in detail_names()}


def detail_classes() -> list[int]:
    """[43]: the class (1..16 in ``CLASSES``) of each detail name, in :func:`detail_names` order;
    OpenScene's ``MAPPING_NUSCENES_DETAILS`` plus one (relviz's class 0 is ignore)."""
    return [CLASSES.index(c) for c, details in DETAIL_PROMPTS.items() for _ in details]


# ---------------------------------------------------------------------------- aggregation
# How the detail names of a class become one zero-shot decision (issue #26 item 8).
MEAN, MAX = "mean", "max"
AGGREGATIONS: dict[str, str] = {
    MEAN: "mean prototype: per class, the normalised mean of its detail names x templates; a point takes "
          "the argmax over the 16 prototypes (relviz's rule before issue 26)",
    MAX: "max over details: per detail name, the normalised mean of its templates; a point takes the argmax "
         "over the 43 names and then that name's class (OpenScene's nuScenes evaluation)",
}
# OpenScene's nuScenes zero-shot numbers (run/evaluate.py with map_nuscenes_details) score the prompt
# list as max over details: the names are alternatives for a class (a grass point should match "grass",
# not a blend of "grass" and "sod" and "meadow"), which the mean prototype of a heterogeneous class
# (vegetation: 8 names, terrain 6) does not express; "max" is the rule to compare with OpenScene. The
# default stays "mean" for now, for one reason only: the analysis protocol's zero-shot mIoU (U, T, G and
# zero-shot on one sample, relviz.eval.structure), the app's caches and every stored result are built
# on the cached 16 class prototypes, and one default must hold everywhere; "max" there needs the 43
# detail embeddings cached beside them (open in issue 26). Every result names its aggregation. (Not
# chosen by which scores higher: on the demo teacher the two differ by < 0.002 mIoU, its detail names
# within a class having cosine 0.996.)
DEFAULT_AGGREGATION = MEAN


def check_aggregation(aggregation: str) -> str:
    """``aggregation`` if it is one of :data:`AGGREGATIONS`, else InputError naming the choices."""
    if not isinstance(aggregation, str) or aggregation not in AGGREGATIONS:
        raise InputError(f"prompt aggregation {shorten(aggregation)}: expected one of "
                         f"{', '.join(map(repr, AGGREGATIONS))}")
    return aggregation


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
