"""The evidence experiment file (relviz/experiment/evidence.toml, issue #27) declares what can answer
the paper's questions, read by the experiment's own parser: 3 losses x 5 seeds, at least 9 distinct
configurations with at least 3 seeds, at least 12 evaluated val scenes, few-shot at 1%, 10%, 100%;
and the evidence world gives every few-shot fraction several whole training scenes. No training."""

from __future__ import annotations

import tomllib

from relviz.demo import EVIDENCE_DATASET, EVIDENCE_EXPERIMENT, EVIDENCE_KEYFRAMES, EVIDENCE_SCENES
from relviz.experiment.spec import load_spec
from relviz.stats import MIN_SCENES, MIN_SEEDS
from relviz.train.config import TrainConfig

PAPER_LOSSES = {"contrastive", "similarity", "relational"}
FRACTIONS = (0.01, 0.1, 1.0)


def _spec():
    return load_spec(EVIDENCE_EXPERIMENT)


def _effective(spec, cell) -> tuple:
    """What a cell trains with: the config's fields that its loss reads or that every loss reads,
    so cells differing only in an ignored knob (temperature under the similarity loss) count once."""
    config = TrainConfig(**{**spec.train, **cell.values}).to_dict()
    loss_options = set(TrainConfig(loss=config["loss"]).loss_function().keywords)
    ignored = {"temperature", "intra_weight"} - loss_options
    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in ignored))


def test_three_losses_at_five_seeds():
    """The grid's cells (the ones the loss claims read) are the three losses, each with 5 seeds."""
    spec = _spec()
    grid = [c for c in spec.cells() if c.table == "grid"]
    assert {cell.values.get("loss", spec.train.get("loss")) for cell in grid} == PAPER_LOSSES
    assert all(len(spec.seeds_for(c)) >= max(5, MIN_SEEDS) for c in grid)


def test_nine_distinct_configurations_with_three_seeds():
    spec = _spec()
    cells = spec.cells()
    assert len({_effective(spec, c) for c in cells}) == len(cells) >= 9  # no cell repeats another's training
    seeds = {c.index: [s for cell, s in spec.runs() if cell.index == c.index] for c in cells}
    assert all(len(seeds[c.index]) >= 3 for c in cells)
    # the sweeps move structure with the student and data fixed: each differs from its loss's grid
    # cell only in that loss's own option (temperature for contrastive, intra_weight for relational)
    grid = {c.values["loss"]: c for c in cells if c.table == "grid"}
    for cell in cells:
        if cell.table != "grid":
            reference = grid[cell.values["loss"]]
            changed = {k for k in set(cell.values) | set(reference.values)
                       if cell.values.get(k) != reference.values.get(k)}
            assert changed and changed <= set(TrainConfig(loss=cell.values["loss"]).loss_function().keywords)


def test_evaluation_on_twelve_val_scenes_and_few_shot_fractions():
    spec = _spec()
    evaluation = spec.evaluation
    assert evaluation.val_scenes is not None and evaluation.val_scenes >= max(12, MIN_SCENES)
    assert evaluation.fewshot_frames == "evaluation_set"
    for cell in spec.cells():  # every configuration has the probe (the correlation reads it); the grid is fine-tuned
        assert set(FRACTIONS) <= set(spec.evaluation_for(cell).linear_probe)
        if cell.table == "grid":
            assert spec.evaluation_for(cell) == evaluation and set(FRACTIONS) <= set(evaluation.finetune)
    assert evaluation.finetune_seeds >= 3


def test_file_trains_on_the_evidence_world():
    train = tomllib.loads(EVIDENCE_EXPERIMENT.read_text())["train"]
    assert (train["dataset"], train["version"], train["split"], train["val_split"]) == (
        EVIDENCE_DATASET, "v1.0-trainval", "train", "val")


def test_world_gives_whole_scenes_to_every_fraction():
    """Against the devkit's own split lists and the few-shot scene rule: >= 12 val scenes, and
    1%, 10% and 100% each take at least 2 whole training scenes."""
    from nuscenes.utils.splits import create_splits_scenes

    from relviz.data.synthetic.config import trainval_scene_names
    from relviz.eval.fewshot import fewshot_scenes

    names = trainval_scene_names(EVIDENCE_SCENES)
    val = set(create_splits_scenes()["val"])
    train = [n for n in names if n not in val]
    assert len(names) - len(train) >= max(12, _spec().evaluation.val_scenes)
    taken = [len(fewshot_scenes(train, f)) for f in FRACTIONS]
    assert taken == [len(train) // 100, len(train) // 10, len(train)] and min(taken) >= 2
    assert 2 <= EVIDENCE_KEYFRAMES <= 40


def test_an_existing_world_of_another_size_is_refused(tmp_path):
    """ensure_dataset never reuses a folder whose scene table has another count than the declared world."""
    import json

    import pytest

    from relviz.config import load_settings
    from relviz.demo import ensure_dataset, evidence_world
    from relviz.errors import RelvizError

    settings = load_settings(env={"RELVIZ_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    tables = settings.ensure().dataset_root(EVIDENCE_DATASET) / "v1.0-trainval"
    tables.mkdir(parents=True)
    (tables / "scene.json").write_text(json.dumps([{"name": f"scene-{i:04d}"} for i in range(20)]))
    with pytest.raises(RelvizError, match=f"has 20 scenes, not the {EVIDENCE_SCENES}"):
        ensure_dataset(settings, lambda line: None, EVIDENCE_DATASET, evidence_world())


def test_out_of_distribution_world_gives_several_scans_to_each_of_its_fractions():
    """The evidence file's out-of-distribution world is the demo's declared KITTI-format world, linear
    probe only, and the field's scan rule labels at least 2 scans at each of its fractions."""
    from relviz.data.kitti import fewshot_scans
    from relviz.demo import EVIDENCE_KITTI_DATASET, evidence_kitti_world

    evaluation = _spec().evaluation
    assert evaluation.ood_datasets == (EVIDENCE_KITTI_DATASET,) and evaluation.wanted_ood()["finetune"] == ()
    world = evidence_kitti_world()
    train = [f"{s}/{i:06d}" for s in world.sequence_names if s != "08" for i in range(world.scans_per_sequence)]
    assert [len(fewshot_scans(train, f)) for f in evaluation.wanted_ood()["linear_probe"]] == [2, 20]


def test_an_out_of_distribution_world_of_other_settings_is_refused(tmp_path):
    """ensure_kitti_world generates the declared world once, reuses it, and refuses a folder generated
    with other settings (or none) rather than score runs on another world."""
    import json

    import pytest

    from relviz.config import load_settings
    from relviz.data.synthetic_kitti import KittiSynthConfig
    from relviz.demo import ensure_kitti_world
    from relviz.errors import RelvizError

    settings = load_settings(env={"RELVIZ_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    small = KittiSynthConfig(sequences=2, scans_per_sequence=1, azimuth_steps=64, beams=8)
    root = ensure_kitti_world(settings, "kitti", small, log=lambda line: None)
    assert sorted(p.name for p in (root / "sequences").iterdir()) == sorted(small.sequence_names)
    stamp = (root / "relviz_synthetic_kitti.json").read_bytes()
    assert ensure_kitti_world(settings, "kitti", small, log=lambda line: None) == root
    assert (root / "relviz_synthetic_kitti.json").read_bytes() == stamp  # reused, not generated again
    with pytest.raises(RelvizError, match="is not the kitti world .*other settings"):
        ensure_kitti_world(settings, "kitti", KittiSynthConfig(sequences=2, scans_per_sequence=2), log=print)
    (root / "relviz_synthetic_kitti.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(RelvizError, match="is not the kitti world"):
        ensure_kitti_world(settings, "kitti", small, log=print)


def test_evidence_workspace_must_be_outside_the_checkout(tmp_path):
    import pytest

    from relviz.demo import REPO_ROOT, check_outside_checkout
    from relviz.errors import RelvizError

    check_outside_checkout(tmp_path)  # outside: accepted
    for inside in (REPO_ROOT, REPO_ROOT / "workspace", REPO_ROOT / "a" / ".." / "workspace"):
        with pytest.raises(RelvizError, match="inside the checkout"):
            check_outside_checkout(inside)
