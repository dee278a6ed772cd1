"""Few-shot out of distribution (#29 item 4): `relviz eval finetune` on a SemanticKITTI folder with its
19 classes and several fine-tuning seeds, a background few-shot job on one (the same numbers as the
library in this process), and the result naming its dataset and format."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import relviz.cli.evaluate  # noqa: F401 (registers `eval` on the app)
from relviz.cli.base import app
from relviz.data.kitti import SemanticKitti
from relviz.data.kitti_classes import KITTI_CLASSES
from relviz.data.synthetic_kitti import KittiSynthConfig, generate_kitti
from relviz.errors import InputError
from relviz.jobs.fewshot import FewshotJob, read_result, run_fewshot_job
from relviz.viz.fewshot import dataset_of

STUDENT = "checkpoints/demo/student-relational.safetensors"


@pytest.fixture(scope="module")
def tiny_kitti(tmp_path_factory):
    """Sequences 00 (train) and 08 (val), one scan each, from a sparse 16-beam, 512-step sensor."""
    return generate_kitti(tmp_path_factory.mktemp("kitti") / "world",
                          KittiSynthConfig(seed=3, sequences=2, scans_per_sequence=1, beams=16, azimuth_steps=512))


def test_eval_finetune_on_a_kitti_folder_runs_each_seed_with_19_classes(tiny_kitti, one_thread):
    from relviz.eval.finetune import finetune
    from relviz.models.checkpoint import load_student

    args = ["eval", "finetune", "--checkpoint", STUDENT, "--dataset", str(tiny_kitti), "--format", "semantickitti",
            "--steps", "1", "--batch", "1", "--finetune-seeds", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["format"] == "semantickitti" and len(out["class_list"]) == 19
    assert out["class_list"] == list(KITTI_CLASSES[1:]) == [*out["seed_runs"][0]["iou"]]
    assert out["frame_rule"] == "slidr-kitti-scan-skip/1" and out["frames"] == ["00/000000"]
    assert out["seeds"] == [0, 1] and len(out["miou_per_seed"]) == 2
    # each seed is the library's fine-tuning of that seed (same process, same thread count: exactly)
    model, _ = load_student(STUDENT)
    train, val = SemanticKitti(tiny_kitti, "train"), SemanticKitti(tiny_kitti, "val")
    direct = [finetune(model, train, val, 0.01, steps=1, batch=1, seed=s)["miou"] for s in (0, 1)]
    assert out["miou_per_seed"] == direct and out["miou"] == pytest.approx(sum(direct) / 2, rel=1e-15)
    refused = CliRunner().invoke(app, args[:-1] + ["0"])
    assert refused.exit_code == 2 and "--finetune-seeds" in refused.output


def test_a_fewshot_job_on_a_kitti_folder_gives_the_librarys_curve(tiny_kitti, tmp_path, one_thread):
    from relviz.eval.finetune import label_efficiency
    from relviz.models.checkpoint import load_student

    job = FewshotJob(str(Path(STUDENT).resolve()), str(tiny_kitti), fractions=(1.0,), steps=1,
                     batch=1, probe_epochs=3, probe_per_class=50, finetune_seeds=2).validate()
    assert job.layout == "semantickitti" and job.splits == ("val", "train")
    (tmp_path / "run").mkdir()
    assert run_fewshot_job(job, tmp_path / "run") == {"status": "succeeded"}
    result = read_result(tmp_path / "run")
    assert (result["dataset"], result["format"]) == ("world", "semantickitti") and len(result["classes"]) == 19
    assert dataset_of(result) == "world (SemanticKITTI, 19 classes)"
    model, _ = load_student(job.checkpoint)
    direct = label_efficiency(model, SemanticKitti(tiny_kitti, "train"), SemanticKitti(tiny_kitti, "val"), (1.0,),
                              finetune_seeds=[0, 1], steps=1, batch=1, probe={"epochs": 3, "max_per_class": 50})
    for key in ("fractions", "frame_fraction", "finetune", "finetune_per_seed", "linear_probe"):
        assert result[key] == direct[key], key
    with pytest.raises(InputError, match="^format: "):
        FewshotJob(job.checkpoint, str(tiny_kitti), format="kitti").validate()
    with pytest.raises(InputError, match="^dataroot: .*neither SemanticKITTI"):
        FewshotJob(job.checkpoint, str(tmp_path)).validate()


def test_an_experiment_evaluates_its_out_of_distribution_datasets(tiny_kitti, synthetic_root, tmp_path, one_thread):
    """``[evaluate] ood_datasets``: the linear probe on the KITTI folder's own splits, stored under ``ood``
    beside the run's in-distribution results (already stored: kept, not recomputed)."""
    import shutil

    from relviz.config import load_settings
    from relviz.eval.fewshot import evaluate_fewshot
    from relviz.experiment import EvaluationSpec, ExperimentError, evaluate_run, stored_evaluation
    from relviz.experiment.aggregate import run_metrics
    from relviz.models.checkpoint import file_sha256, load_student
    from relviz.train import from_dict

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(STUDENT, run / "student.safetensors")
    config = from_dict({"dataset": str(synthetic_root)})
    evaluation = EvaluationSpec(val_scenes=1, linear_probe=(1.0,), ood_datasets=(str(tiny_kitti),))
    in_distribution = {"checkpoint_sha256": file_sha256(run / "student.safetensors"),
                       "protocol": json.loads(json.dumps(evaluation.protocol(config))),
                       "structure": {"uniformity": 1.0}, "linear_probe": {"1": {"miou": 0.3}}}
    (run / "evaluation.json").write_text(json.dumps(in_distribution))
    assert stored_evaluation(run, config, evaluation) is None  # the KITTI folder is not evaluated yet
    result = evaluate_run(run, config, evaluation, load_settings())
    model, _ = load_student(STUDENT)
    direct = evaluate_fewshot(model, SemanticKitti(tiny_kitti, "train"), SemanticKitti(tiny_kitti, "val"), 1.0, seed=0)
    entry = result["ood"][str(tiny_kitti)]
    assert entry["format"] == "semantickitti" and entry["linear_probe"]["1"]["miou"] == direct["miou"]
    assert result["linear_probe"] == {"1": {"miou": 0.3}}  # the stored in-distribution result is kept
    assert stored_evaluation(run, config, evaluation) is not None
    assert run_metrics(result)[f"linear_probe@1@{tiny_kitti}"] == direct["miou"]
    with pytest.raises(ExperimentError, match=r"^\[evaluate\] 'ood_datasets': 'nowhere': .* does not exist"):
        evaluate_run(run, config, EvaluationSpec(val_scenes=1, ood_datasets=("nowhere",)), load_settings())


def test_out_of_distribution_fractions_replace_the_runs_own(tiny_kitti, synthetic_root, tmp_path, one_thread):
    """``ood_linear_probe`` / ``ood_finetune``: the out-of-distribution dataset is evaluated at its own
    fractions (here a probe at 0.5 and no fine-tuning, where the run's own are a probe at 1 and a
    fine-tuning at 1); a stored evaluation is complete with exactly those; absent, the run's own apply."""
    import shutil

    from relviz.config import load_settings
    from relviz.eval.fewshot import evaluate_fewshot
    from relviz.experiment import EvaluationSpec, evaluate_run, stored_evaluation
    from relviz.experiment.spec import ExperimentFileError, parse_spec
    from relviz.models.checkpoint import file_sha256, load_student
    from relviz.train import from_dict

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(STUDENT, run / "student.safetensors")
    config = from_dict({"dataset": str(synthetic_root)})
    evaluation = EvaluationSpec(val_scenes=1, linear_probe=(1.0,), finetune=(1.0,), ood_datasets=(str(tiny_kitti),),
                                ood_linear_probe=(0.5,), ood_finetune=())
    assert evaluation.wanted_ood() == {"linear_probe": (0.5,), "finetune": ()}
    assert EvaluationSpec(linear_probe=(0.1,), finetune=(1.0,)).wanted_ood() == {"linear_probe": (0.1,),
                                                                                  "finetune": (1.0,)}
    own = {"checkpoint_sha256": file_sha256(run / "student.safetensors"),
           "protocol": json.loads(json.dumps(evaluation.protocol(config))), "structure": {"uniformity": 1.0},
           "linear_probe": {"1": {"miou": 0.3}}, "finetune": {"1": {"miou": 0.4}}}
    (run / "evaluation.json").write_text(json.dumps(own))
    assert stored_evaluation(run, config, evaluation) is None
    result = evaluate_run(run, config, evaluation, load_settings())
    entry = result["ood"][str(tiny_kitti)]
    model, _ = load_student(STUDENT)
    direct = evaluate_fewshot(model, SemanticKitti(tiny_kitti, "train"), SemanticKitti(tiny_kitti, "val"), 0.5, seed=0)
    assert entry["linear_probe"] == {"0.5": entry["linear_probe"]["0.5"]} and entry["finetune"] == {}
    assert entry["linear_probe"]["0.5"]["miou"] == direct["miou"]
    assert stored_evaluation(run, config, evaluation) is not None
    # the same stored results are not complete where the run's own fractions apply out of distribution
    assert stored_evaluation(run, config, EvaluationSpec(**{**evaluation.__dict__, "ood_linear_probe": None})) is None
    table = {"experiment": {"seeds": [0]}, "evaluate": {"ood_datasets": ["k"], "ood_linear_probe": [0.01, 0.1],
                                                       "ood_finetune": []}}
    parsed = parse_spec(table, "x.toml", "x").evaluation
    assert (parsed.ood_linear_probe, parsed.ood_finetune) == ((0.01, 0.1), ())
    assert parse_spec({"experiment": {"seeds": [0]}}, "x.toml", "x").evaluation.ood_linear_probe is None
    with pytest.raises(ExperimentFileError, match=r"\[evaluate\] 'ood_linear_probe': must be a list of fractions"):
        parse_spec({"experiment": {"seeds": [0]}, "evaluate": {"ood_linear_probe": [2]}}, "x.toml", "x")


def test_zeroshot_on_a_kitti_folder_scores_its_19_class_prompts(tiny_kitti):
    """`relviz eval zeroshot` on a SemanticKITTI folder: each point takes the class of its nearest
    KITTI prompt row (max over the names, each read under every template), mIoU over the classes with
    ground truth; against a direct per-name encoding and a per-class TP / (TP + FP + FN) by hand."""
    import numpy as np
    import torch.nn.functional as F

    from relviz.data.dataset import collate
    from relviz.eval.features import dataset_for, point_features_of
    from relviz.models.checkpoint import load_student
    from relviz.teacher import TeacherSpec, load_teacher
    from relviz.teacher.prompts import KITTI_PROMPTS, TEMPLATES

    teacher_file = "checkpoints/demo/teacher.safetensors"
    args = ["eval", "zeroshot", "--checkpoint", STUDENT, "--dataset", str(tiny_kitti), "--teacher", teacher_file,
            "--prompt-aggregation", "max"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["prompts"] == "semantickitti" and list(out["iou"]) == list(KITTI_CLASSES[1:])

    teacher = load_teacher(TeacherSpec("demo", teacher_file))
    rows, classes = [], []
    for c, (name, details) in enumerate(KITTI_PROMPTS.items(), 1):
        for detail in details:  # one name at a time, under every template
            emb = F.normalize(teacher.encode_text([t.format(detail) for t in TEMPLATES]).float().cpu(), dim=1)
            rows.append(F.normalize(emb.mean(0), dim=0))
            classes.append(c)
    model, _ = load_student(STUDENT)
    val = SemanticKitti(tiny_kitti, "val")
    feats = point_features_of(model, collate([dataset_for(model, val)[0]]), "cpu")
    pred = np.asarray(classes)[(feats.float() @ torch.stack(rows).T).argmax(1).numpy()]
    labels = val.lidar(0)[1]
    p, t = pred[labels > 0], labels[labels > 0]
    iou = [np.sum((p == c) & (t == c)) / np.sum((p == c) | (t == c)) for c in range(1, 20) if (t == c).any()]
    assert out["miou"] == pytest.approx(np.mean(iou), rel=1e-12)  # float64 means of at most 19 terms
    refused = CliRunner().invoke(app, args + ["--query", "a tree"])
    assert refused.exit_code == 2 and "only its 19 class prompts" in refused.output
