"""The bad-input corpus: hostile or broken inputs to the CLI, the library and the app.

Every case must end in a clear message that names the file, field or value at fault and what was
expected; from the CLI, exit code 2 and one line without a Python traceback; in the app, an error or
warning panel with the rest of the page working; nothing executed; the inputs byte-identical after.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from relviz.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
MAX_MESSAGE = 800  # a rejected value is cut short, never echoed whole


def _digest(paths) -> dict[str, str]:
    out = {}
    for p in paths:
        p = Path(p)
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p] if p.exists() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def cli_refuses(args: list[str], *patterns: str, env: dict | None = None, inputs=()) -> str:
    """Run ``relviz ARGS`` in-process; it must exit 2 with one ``error:`` line (or click's usage
    error) that matches every pattern, no traceback, and leave ``inputs`` byte-identical."""
    before = _digest(inputs)
    result = CliRunner().invoke(cli_app, args, env=env)
    out = result.output
    assert result.exit_code == 2, (args, result.exit_code, out, result.exception)
    assert "Traceback" not in out, out
    assert len(out) < MAX_MESSAGE, f"message of {len(out)} characters"
    for pattern in patterns:
        assert pattern.lower() in out.lower(), (pattern, out)
    assert _digest(inputs) == before, "an input file was changed"
    return out


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def teacher_dim() -> int:
    from relviz.teacher.demo import DEMO_TEACHER_PATH
    from relviz.models.checkpoint import read_metadata

    return int(read_metadata(DEMO_TEACHER_PATH)["model_config"]["embed_dim"])


@pytest.fixture
def student(tmp_path, teacher_dim) -> Path:
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint

    model = build_minkunet("MinkUNet14", out_channels=teacher_dim, width=0.125, backend="torch")
    return save_checkpoint(tmp_path / "good.safetensors", model,
                           {"kind": "student", "architecture": model.config.to_dict(), "loss": "relational"})


@pytest.fixture
def broken_copy(synthetic_root, tmp_path):
    """A copy of the synthetic dataset made of symlinks; ``make(rel)`` turns one file into a real,
    writable copy to damage. Returns (root, make)."""
    root = tmp_path / "broken-data"
    shutil.copytree(synthetic_root, root, copy_function=os.symlink)

    def make(rel: str | Path) -> Path:
        target = root / rel
        data = target.read_bytes()
        target.unlink()
        target.write_bytes(data)
        return target

    return root, make


def _val_keyframe(root) -> dict:
    from relviz.data import NuScenesLidarSeg

    return NuScenesLidarSeg(root, split="mini_val", load_images=False).keyframes[0]


# --------------------------------------------------------------------------------- checkpoints
def _pickle_bomb(path: Path, marker: Path) -> None:
    class Bomb:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "payload": Bomb()}, f)


CHECKPOINT_CASES = {
    "missing": (lambda p, s: None, "not found"),
    "empty": (lambda p, s: p.write_bytes(b""), "not a readable"),
    "random bytes": (lambda p, s: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not a readable"),
    "truncated": (lambda p, s: p.write_bytes(s.read_bytes()[: s.stat().st_size // 2]), "not a readable"),
    "directory": (lambda p, s: p.mkdir(), "is a directory"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_broken_checkpoint_files(case, student, tmp_path, synthetic_root):
    make, expected = CHECKPOINT_CASES[case]
    bad = tmp_path / "bad.safetensors"
    make(bad, student)
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(bad), "--dataset", str(synthetic_root)], str(bad), expected,
                inputs=[bad])


def test_pickle_that_would_run_code_is_refused_unexecuted(tmp_path, synthetic_root):
    bad, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    _pickle_bomb(bad, marker)
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(bad), "--dataset", str(synthetic_root)], str(bad),
                "refused", inputs=[bad])
    assert not marker.exists()


def test_another_architectures_weights(tmp_path, teacher_dim, synthetic_root):
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint

    big = build_minkunet("MinkUNet18", out_channels=teacher_dim, width=0.125, backend="torch")
    small = build_minkunet("MinkUNet14", out_channels=teacher_dim, width=0.125, backend="torch")
    bad = save_checkpoint(tmp_path / "mixed.safetensors", big.state_dict(),
                          {"kind": "student", "architecture": small.config.to_dict()})  # says 14, holds 18
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(bad), "--dataset", str(synthetic_root)], str(bad),
                "does not fit the model", "unexpected", inputs=[bad])


def test_nan_weights(tmp_path, teacher_dim, synthetic_root):
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint

    model = build_minkunet("MinkUNet14", out_channels=teacher_dim, width=0.125, backend="torch")
    state = model.state_dict()
    state["final.kernel"] = torch.full_like(state["final.kernel"], float("nan"))
    bad = save_checkpoint(tmp_path / "nan.safetensors", state,
                          {"kind": "student", "architecture": model.config.to_dict()})
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(bad), "--dataset", str(synthetic_root)], str(bad),
                "NaN or Inf", "final.kernel", inputs=[bad])


# ------------------------------------------------------------------------------------ datasets
def test_missing_dataset(student, tmp_path):
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(student), "--dataset", str(tmp_path / "nowhere")],
                str(tmp_path / "nowhere"), "does not exist")


@pytest.mark.parametrize("case", ["truncated table", "missing table", "missing label file"])
def test_broken_tables(case, broken_copy, student):
    root, make = broken_copy
    if case == "truncated table":
        table = make("v1.0-mini/sample_data.json")
        table.write_bytes(table.read_bytes()[:1000])
        expected = ["sample_data.json is not valid JSON", "cannot load"]
    elif case == "missing table":
        (root / "v1.0-mini" / "calibrated_sensor.json").unlink()
        expected = ["calibrated_sensor.json", "missing table"]
    else:
        next((root / "lidarseg" / "v1.0-mini").glob("*.bin")).unlink()
        expected = ["label files but", "records"]
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(student), "--dataset", str(root)], *expected,
                inputs=[root / "v1.0-mini"])


def _damage_lidar(root, make, keyframe) -> tuple[Path, list[str]]:
    path = make(keyframe["lidar"]["filename"])
    path.write_bytes(path.read_bytes()[:-7])
    return path, ["not a whole number of points", str(path)]


def _missing_lidar(root, make, keyframe):
    path = root / keyframe["lidar"]["filename"]
    path.unlink()
    return path, [str(path), "is missing"]


def _short_labels(root, make, keyframe):
    path = make(keyframe["lidarseg"])
    path.write_bytes(path.read_bytes()[:-3])
    return path, [str(path), "labels but its point cloud has"]


def _labels_out_of_range(root, make, keyframe):
    path = make(keyframe["lidarseg"])
    labels = np.fromfile(path, dtype=np.uint8)
    labels[5] = 200
    labels.tofile(path)
    return path, [str(path), "label 200", "0..31"]


@pytest.mark.parametrize("damage", [_damage_lidar, _missing_lidar, _short_labels, _labels_out_of_range],
                         ids=["lidar not whole points", "lidar missing", "lidarseg wrong length",
                              "lidarseg out of range"])
def test_broken_point_files(damage, broken_copy):
    """Per-file damage is found when the keyframe is read, named with the file."""
    from relviz.data import NuScenesLidarSeg
    from relviz.data.nuscenes import DatasetError

    root, make = broken_copy
    keyframe = _val_keyframe(root)
    path, expected = damage(root, make, keyframe)
    before = _digest([path])
    ds = NuScenesLidarSeg(root, split="mini_val", load_images=False)
    with pytest.raises(DatasetError) as err:
        ds[0]
    for text in expected:
        assert text in str(err.value)
    assert _digest([path]) == before


def test_broken_point_file_from_the_cli(broken_copy, student):
    root, make = broken_copy
    path, expected = _damage_lidar(root, make, _val_keyframe(root))
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(student), "--dataset", str(root)], *expected,
                inputs=[path])


@pytest.mark.parametrize("args, expected", [
    (["--split", "mini_test"], ["unknown split 'mini_test'"]),
    (["--split", "train"], ["does not belong to version v1.0-mini"]),
], ids=["unknown split", "split of another version"])
def test_unknown_split(args, expected, student, synthetic_root):
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(student), "--dataset", str(synthetic_root), *args], *expected)


def test_unknown_version(synthetic_root):
    from relviz.data import NuScenesLidarSeg
    from relviz.data.nuscenes import DatasetError

    with pytest.raises(DatasetError, match="unknown nuScenes version 'v2.0'; expected one of v1.0-mini"):
        NuScenesLidarSeg(synthetic_root, version="v2.0", split="mini_val")
    with pytest.raises(DatasetError, match="v1.0-trainval is missing.*found: v1.0-mini"):
        NuScenesLidarSeg(synthetic_root, version="v1.0-trainval", split="val")


# ----------------------------------------------------------------------------- training configs
@pytest.mark.parametrize("args, expected", [
    (["--loss", "cosine"], ["'loss'", "unknown loss 'cosine'", "contrastive"]),
    (["--arch", "ResNet50"], ["'arch'", "unknown architecture 'ResNet50'", "MinkUNet14"]),
    (["--lr", "-0.1"], ["'lr'", "must be > 0"]),
    (["--set", "epochs=2.5"], ["'epochs'", "whole number", "2.5"]),
    (["--set", "pairs=1e400"], ["'pairs'", "finite"]),
    (["--set", "epoch=3"], ["unknown field", "'epoch'"]),
    (["--set", "epochs"], ["--set expects KEY=VALUE"]),
    (["--device", "tpu"], ["'device'", "expected auto, cpu or cuda", "'tpu'"]),
    (["--set", "augment=\"yes\""], ["'augment'", "true or false"]),
    (["--set", "loss=3"], ["'loss'", "must be a string"]),
], ids=["unknown loss", "unknown arch", "negative lr", "fractional epochs", "infinite pairs", "unknown field",
        "set without value", "unknown device", "string bool", "number for a name"])
def test_bad_training_flags(args, expected):
    cli_refuses(["train", *args], *expected)


@pytest.mark.parametrize("name, text, expected", [
    ("broken.json", '{"loss": "relational", ', ["broken.json", "not valid JSON"]),
    ("broken.toml", 'loss = "relational\n', ["broken.toml", "not valid TOML"]),
    ("fraction.toml", "epochs = 2.5\n", ["fraction.toml", "'epochs'", "whole number"]),
    ("list.json", "[1, 2]", ["list.json", "expected a table"]),
], ids=["broken json", "broken toml", "fractional epochs in toml", "not a table"])
def test_bad_config_files(name, text, expected, tmp_path):
    path = tmp_path / name
    path.write_text(text)
    cli_refuses(["train", "--config", str(path)], *expected, inputs=[path])


def test_missing_config_file(tmp_path):
    cli_refuses(["train", "--config", str(tmp_path / "none.json")], "none.json", "cannot be read")


def test_missing_teacher_weights(synthetic_root, tmp_path):
    weights = tmp_path / "vit-b-16.bin"
    cli_refuses(["train", "--dataset", str(synthetic_root), "--teacher", "ViT-B-16", "--teacher-pretrained",
                 str(weights), "--max-steps", "1", "--run-dir", str(tmp_path / "run")], str(weights), "not found")


def test_cuda_asked_for_without_a_gpu(synthetic_root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cli_refuses(["train", "--dataset", str(synthetic_root), "--device", "cuda", "--max-steps", "1",
                 "--run-dir", str(tmp_path / "run")], "'device'", "no CUDA device")


def test_open_clip_teacher_without_weights_is_refused():
    from relviz.teacher import TeacherSpec, TeacherWeightsError, load_teacher

    with pytest.raises(TeacherWeightsError, match="'ViT-B-16' has no weights.*teacher_pretrained"):
        load_teacher(TeacherSpec("ViT-B-16"))


# ----------------------------------------------------------------------------------------- jobs
@pytest.mark.parametrize("action", ["logs", "cancel", "resume"])
def test_unknown_job_ids(action):
    cli_refuses(["jobs", action, "no-such-job"], "no job 'no-such-job'")


def test_shell_syntax_in_a_real_job_is_never_executed(synthetic_root, tmp_path, workspace_home):
    """A dataset folder whose name is shell syntax, used by a job that really starts: the name reaches
    the trainer as an argument, never through a shell."""
    from relviz.config import load_settings
    from relviz.jobs import JobStore

    name = "ds; touch PWNED $(touch PWNED) `touch PWNED`"  # relative: a shell would create it in its cwd
    (Path(workspace_home) / "datasets").mkdir(exist_ok=True)
    os.symlink(synthetic_root, Path(workspace_home) / "datasets" / name)
    result = CliRunner().invoke(cli_app, ["jobs", "submit", "--dataset", name, "--max-steps", "1", "--width", "0.125",
                                          "--name", "$(touch PWNED)"])
    assert result.exit_code == 0, result.output
    store = JobStore(load_settings())
    job = store.get(result.output.strip().splitlines()[-1])
    deadline = time.time() + 120
    while time.time() < deadline and not store.events(job)[0]:  # the trainer has started with the config
        time.sleep(0.3)
    if store.get(job.id).status == "running":
        store.cancel(job.id, grace_s=1)
    assert json.loads((job.run_dir / "config.json").read_text())["dataset"] == name
    for folder in (job.run_dir, Path.cwd(), Path(workspace_home), Path(workspace_home) / "datasets"):
        assert not (folder / "PWNED").exists(), folder


@pytest.mark.parametrize("command", [
    ["jobs", "submit", "--dataset", "x; touch {marker}"],
    ["eval", "zeroshot", "--checkpoint", "{student}", "--dataset", "$(touch {marker})"],
    ["train", "--set", "name=`touch {marker}`"],
], ids=["job dataset", "eval dataset", "train field"])
def test_shell_syntax_is_never_executed(command, tmp_path, student):
    marker = tmp_path / "PWNED"
    args = [a.format(marker=marker, student=student) for a in command]
    cli_refuses(args, "error")
    assert not marker.exists()
    assert not Path("PWNED").exists()


# ------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("env, expected", [
    ({"RELVIZ_DEVICE": "tpu"}, ["RELVIZ_DEVICE is 'tpu'", "auto, cpu, cuda"]),
    ({"RELVIZ_SPARSE_BACKEND": "spconv; rm -rf /"}, ["RELVIZ_SPARSE_BACKEND", "torch, minkowski"]),
    ({"RELVIZ_DEVICE": "x" * 100_000}, ["RELVIZ_DEVICE", "100,000 characters"]),
    ({"RELVIZ_CONFIG": "/nonexistent/relviz.toml"}, ["RELVIZ_CONFIG", "does not exist"]),
], ids=["device", "backend", "100k value", "missing config file"])
def test_bad_environment(env, expected):
    cli_refuses(["info"], *expected, env=env)


def test_workspace_that_is_a_file(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a folder")
    cli_refuses(["info"], "RELVIZ_HOME", str(home), "not a directory", env={"RELVIZ_HOME": str(home)},
                inputs=[home])


@pytest.mark.parametrize("text, expected", [
    ('device = "cuda\n', ["not valid TOML"]),
    ('devcie = "cpu"\n', ["unknown setting", "devcie"]),
    ('[relviz]\nsparse_backend = "spconv"\n', ["'sparse_backend' is 'spconv'"]),
    ("device = 3\n", ["'device' must be a string"]),
], ids=["broken toml", "unknown key", "bad value", "wrong type"])
def test_broken_settings_file(text, expected, tmp_path):
    path = tmp_path / "relviz.toml"
    path.write_text(text)
    cli_refuses(["info"], str(path), *expected, env={"RELVIZ_CONFIG": str(path)}, inputs=[path])


# ------------------------------------------------------------------------ export, toy, synth
def test_export_into_a_file(student, synthetic_root, tmp_path):
    target = tmp_path / "submission"
    target.write_text("keep me")
    cli_refuses(["eval", "export", "--checkpoint", str(student), "--dataset", str(synthetic_root), "--out",
                 str(target)], str(target), "not a directory", inputs=[target])


@pytest.mark.parametrize("args, expected", [
    (["toy", "--clusters", "2"], ["clusters must be 1 or 3"]),
    (["toy", "--iters", "0"], ["iters must be >= 1"]),
    (["toy", "--clusters", "three"], ["'--clusters'", "valid integer"]),
    (["synth", "--samples-per-scene", "1"], ["samples_per_scene", "[2, 40]"]),
    (["synth", "--samples-per-scene", "100000"], ["samples_per_scene", "[2, 40]"]),
    (["synth", "--image-size", "10x10"], ["between 64x64 and 1600x900"]),
    (["synth", "--image-size", "wide"], ["800x450", "'wide'"]),
    (["synth", "--workers", "0"], ["workers must be >= 1"]),
    (["synth", "--seed", "-3"], ["seed must be >= 0"]),
    (["synth", "--beams", "1"], ["beams must be in [2, 128]", "got 1"]),
], ids=["toy clusters", "toy iters", "toy non-number", "synth few samples", "synth many samples",
        "synth small images", "synth size text", "synth workers", "synth seed", "synth beams"])
def test_out_of_range_parameters(args, expected, tmp_path):
    cli_refuses([*args, *(["--out", str(tmp_path / "s")] if args[0] == "synth" else [])], *expected)
    assert not (tmp_path / "s").exists()


def test_synth_into_an_existing_folder(tmp_path):
    target = tmp_path / "exists"
    target.mkdir()
    (target / "keep").write_text("mine")
    cli_refuses(["synth", "--out", str(target)], str(target), "already exists", inputs=[target])


def test_the_real_entry_point_prints_one_line_and_exits_2():
    out = subprocess.run([sys.executable, "-m", "relviz", "toy", "--clusters", "2"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == ["error: clusters must be 1 or 3, got 2"]


# ------------------------------------------------------------------------------------------ app
def _page(path: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(path)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


HOSTILE_QUERIES = {
    "100k characters": ("car " * 25_000, ["100,000 characters", "at most 10,000"]),
    "control characters": ("car\nbus\x07\x1b[31m", ["line 2", "control character U+0007"]),
    "right-to-left text": ("\u202eرَاكِب دراجة", None),  # valid free text (#18): accepted, unscored
    "emoji": ("🚗🚲 = car\n🚌", None),  # a scored emoji query and an unscored one
    "only whitespace": ("   \n\t\n  ", ["at least one query"]),
    "empty prompt": ("= car", ["line 1", "prompt before '=' is empty"]),
}


def test_hostile_queries_in_the_app(app_workspace):
    at = _page("app_pages/zeroshot.py")
    assert not at.exception and not at.error
    for case, (text, expected) in HOSTILE_QUERIES.items():
        at.session_state["zs_queries"] = text  # what the page's live query box sends
        at.run()
        assert not at.exception, (case, at.exception)
        message = at.error[0].value if at.error else ""
        if expected is None:  # valid input: no error
            assert not at.error, (case, message[:300])
        for part in expected or ():
            assert part in message, (case, message[:300])
        assert len(message) < MAX_MESSAGE, (case, len(message))
        # the page keeps working: a good query afterwards gives predictions again
        at.session_state["zs_queries"] = "Car\nroad = Driveable_Surface"
        at.run()
        assert not at.exception and not at.error, case
        assert at.metric[0].value != "n/a"


HOSTILE_URLS = [
    ("app_pages/structure.py", {"k": "abc"}, "`k` = 'abc' ignored"),
    ("app_pages/structure.py", {"k": "99"}, "`k` = '99' ignored: expected a whole number from 1 to 8"),
    ("app_pages/structure.py", {"seed": "-5"}, "`seed` = '-5' ignored"),
    ("app_pages/zeroshot.py", {"sample": "abc"}, "`sample` = 'abc' ignored"),
    ("app_pages/zeroshot.py", {"sample": "-1"}, "`sample` = '-1' ignored"),
    ("app_pages/zeroshot.py", {"sample": "../../etc/passwd"}, "`sample` = '../../etc/passwd' ignored"),
]


def test_hostile_url_parameters(app_workspace):
    # one workspace for all cases: the first visit of a page fills its disk caches, the rest reuse them
    for page, params, expected in HOSTILE_URLS:
        at = _page(page, **params)
        assert not at.exception, (params, at.exception)
        assert any(expected in w.value for w in at.warning), (params, [w.value for w in at.warning])
        assert at.metric, params  # the page went on with the default


def test_hostile_checkpoint_choice_in_the_url(app_workspace):
    at = _page("app_pages/compare.py", ckpts="../../etc/passwd,test-relational")
    assert not at.exception, at.exception
    assert at.multiselect(key="cmp_ckpts").value == ["test-relational"]


# ----------------------------------------------------------------------- non-finite features
def test_nan_features_name_the_checkpoint(tmp_path, teacher_dim, synthetic_root):
    """Finite weights whose features are NaN (a negative batch-norm variance): a clear error that
    names the checkpoint, not a silent zero-shot mIoU of 0."""
    from relviz.models import build_minkunet
    from relviz.models.checkpoint import save_checkpoint

    model = build_minkunet("MinkUNet14", out_channels=teacher_dim, width=0.125, backend="torch")
    state = model.state_dict()
    key = next(k for k in state if k.endswith("running_var"))
    state[key] = -torch.ones_like(state[key])
    bad = save_checkpoint(tmp_path / "nan-features.safetensors", state,
                          {"kind": "student", "architecture": model.config.to_dict()})
    cli_refuses(["eval", "zeroshot", "--checkpoint", str(bad), "--dataset", str(synthetic_root)], str(bad),
                "NaN or Inf", inputs=[bad])


# ------------------------------------------------------------------------------ one error type
def test_every_deliberate_error_is_a_relviz_error():
    """Walk relviz/: every ``raise X(...)`` names a RelvizError subclass (or leaves the process:
    SystemExit, typer's Exit and usage errors); re-raising a caught exception is fine. A builtin
    exception raised on purpose would escape the one error boundary of the CLI and the app."""
    import ast
    import builtins
    import importlib

    from relviz.errors import RelvizError

    offenders = []
    for path in sorted((ROOT / "relviz").rglob("*.py")):
        names = dict(vars(builtins))
        if path.name != "__main__.py":  # importing those would run the command line
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.update(vars(importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))))
        tree = ast.parse(path.read_text())
        for imp in ast.walk(tree):  # names imported inside functions too
            if isinstance(imp, ast.ImportFrom) and imp.module and imp.module.startswith("relviz") and imp.level == 0:
                source = importlib.import_module(imp.module)
                names.update({a.asname or a.name: getattr(source, a.name) for a in imp.names
                              if hasattr(source, a.name)})
        # a module's __getattr__ must raise AttributeError: that is Python's protocol, not an error for users
        protocol = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
                    for n in ast.walk(f)}
        # exception objects held in variables (caught, or built by a helper such as JobStore._error)
        caught = {h.name for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.name} | \
            {t.id for a in ast.walk(tree) if isinstance(a, ast.Assign) for t in a.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None or id(node) in protocol:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = ast.unparse(target)
            if name in ("typer.Exit", "typer.BadParameter"):
                continue
            obj = names.get(name)
            if obj is None and isinstance(target, ast.Name) and target.id in caught:
                continue
            if not isinstance(obj, type):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} raises {name}, which is not resolved")
                continue
            if not issubclass(obj, (RelvizError, SystemExit)):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} raises {name}")
    assert not offenders, offenders
