"""bench/gpu_check.sh --dry, as CI runs it: every check that needs no CUDA passes on the CPU, the
CUDA tests skip with their reason, and the record holds what the GPU run will fill in."""

import json
import os
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {"dataset", "environment", "cuda_tests", "autocast_student_on_cpu", "sparse_timing", "slidr_step"}

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="session")
def dry(tmp_path_factory):
    """(the script's return code, its record, its output folder): one dry run, about 30 s of CPU, for the
    whole run (both test processes: the first builds it under a lock, the other waits and reads it; an
    xdist_group did not keep these tests on one worker)."""
    from conftest import _built_once

    def build(out: Path) -> None:
        proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry", str(out / "result")], cwd=ROOT,
                              env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                              timeout=600)
        (out / "returncode").write_text(f"{proc.returncode}\n")
        (out / "output").write_text(proc.stdout[-2000:] + proc.stderr[-2000:])

    folder = _built_once(tmp_path_factory, "gpu-check", build)
    out = folder / "result"
    assert (out / "gpu_check.json").is_file(), (folder / "output").read_text()
    return int((folder / "returncode").read_text()), json.loads((out / "gpu_check.json").read_text()), out


def test_every_check_passes_and_the_folder_holds_three_files(dry):
    returncode, record, out = dry
    failed = {k: c.get("error") for k, c in record["checks"].items() if not c["ok"]}
    assert returncode == 0 and record["ok"] and not failed, failed
    assert set(record["checks"]) == CHECKS and all(c["seconds"] >= 0 for c in record["checks"].values())
    assert record["mode"] == "dry" and record["environment"]["cuda_available"] is False
    # the device tool brings back at most 8 files from its output folder
    assert sorted(p.name for p in out.iterdir()) == ["cuda_tests.xml", "gpu_check.json", "gpu_check.log"]
    assert "mode dry: all checks passed" in (out / "gpu_check.log").read_text()


def test_imports_the_gpu_machine_lacks_are_refused(dry):
    _, record, _ = dry
    absent = set(record["absent_on_gpu"])
    assert {"open3d", "streamlit", "plotly"} <= absent  # installed here, not on the GPU machine
    # on the GPU machine, or carried to it as wheels
    assert not absent & {"relviz", "torch", "numpy", "scipy", "open_clip", "nuscenes", "pyquaternion", "ftfy"}


def test_cuda_tests_are_collected_and_skip_with_the_reason(dry):
    _, record, _ = dry
    tests = record["cuda_tests"]
    assert tests["collected"] >= 10 and tests["skipped"] == tests["collected"]
    assert tests["passed"] == tests["failed"] == 0
    assert tests["skip_reasons"] and all("CUDA" in reason for reason in tests["skip_reasons"])


def test_sparse_timing_record(dry):
    _, record, _ = dry
    sparse = record["sparse"]
    assert sparse["backend"].startswith("relviz") and sparse["device"] == "cpu"
    assert 0 < sparse["voxels"] <= sparse["points"]
    passes = sparse["float32"]
    assert passes["forward_s"] > 0 and passes["backward_s"] > 0
    # one timed pass: total = forward + backward, each rounded to 1e-4 (three roundings of <= 5e-5)
    assert abs(passes["total_s"] - passes["forward_s"] - passes["backward_s"]) <= 1.5e-4
    assert sparse["spconv"]["timed"] is False and "spconv" in sparse["spconv"]["reason"]


def test_slidr_step_record_and_projection(dry):
    _, record, _ = dry
    slidr, size = record["slidr"], record["size"]
    preset = tomllib.loads((ROOT / "relviz" / "train" / "presets" / "slidr.toml").read_text())
    assert slidr["preset"] == "slidr" and "random weights" in slidr["teacher"]
    # the preset's augmentations; the teacher in the step (image_augment needs it); the CPU's
    # worker count by the auto rule (none: docs, bench/README.md)
    assert slidr["image_augment"] is preset["image_augment"] is True and slidr["drop_cuboids"] is True
    assert slidr["teacher_features"] == "online" and slidr["workers"] == 0
    assert slidr["timed_steps"] == size["steps"] - size["warm_steps"] == len(slidr["step_s"])
    assert slidr["step_s_median"] == pytest.approx(statistics.median(slidr["step_s"]), abs=1e-4)
    assert slidr["loader_micro_batches_per_s"] > 0 and slidr["step_s_on_a_batch_in_memory"] > 0
    projection = slidr["projection"]
    # nuScenes trainval's 28,130 train keyframes, the preset's batch and epochs (docs/presets.md: 351,600)
    steps = preset["epochs"] * (28_130 // (preset["batch"] * preset["accumulate"]))
    assert projection["total_steps"] == steps == 351_600
    hours = (steps * slidr["step_s_median"] + preset["epochs"] * slidr["validation_s"]) / 3600
    # the record's inputs are rounded (median to 1e-4 s, validation to 1e-2 s), the hours to 0.1
    slack = (steps * 5e-5 + preset["epochs"] * 5e-3) / 3600 + 0.05
    assert projection["hours"] == pytest.approx(hours, abs=slack)
