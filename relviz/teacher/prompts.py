"""Class prompts: OpenScene's 43 nuScenes detail names mapped many-to-one onto the 16 classes."""

from __future__ import annotations

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
