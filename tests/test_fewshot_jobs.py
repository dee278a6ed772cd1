"""Few-shot label-efficiency jobs: a background job per checkpoint (the same numbers as the library
on the same thread count), resumed by finished selection after a SIGTERM, progress on the Jobs page,
the curve on the Label efficiency page."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from support import wait_for
from relviz.config import load_settings
from relviz.errors import InputError
from relviz.jobs import JobPriority, JobStore, job_progress
from relviz.jobs.fewshot import Cancelled, FewshotJob, _Progress, read_result, run_fewshot_job
from relviz.train.rundir import EventLog, read_events
from relviz.viz.fewshot import checkpoint_label_efficiency, curve_label, finetune_minus_probe_frame

APP = str(Path(__file__).resolve().parents[1] / "app.py")
# tiny schedules: 2 fine-tuning steps of 1 frame with 2 seeds, a 5-epoch probe on at most 100 points per
# class; two selections of mini_train's 8 scenes (every 8th scene, every 4th: 1 and 2 scenes)
SCHEDULE = dict(fractions=(0.1, 0.25), steps=2, batch=1, probe_epochs=5, probe_per_class=100, finetune_seeds=2)


def _job(cold_app_workspace, **changes) -> FewshotJob:
    settings = load_settings()
    checkpoint = cold_app_workspace / "runs" / "test-relational" / "student.safetensors"
    return FewshotJob(str(checkpoint), str(settings.dataset_root("synthetic-mini")), **{**SCHEDULE, **changes})


def test_bad_fewshot_jobs_are_refused_naming_the_field(cold_app_workspace, tmp_path):
    job = _job(cold_app_workspace)
    for changes, field in [({"checkpoint": str(tmp_path / "none.safetensors")}, "checkpoint"),
                           ({"dataroot": str(tmp_path / "nowhere")}, "dataroot"), ({"fractions": ()}, "fractions"),
                           ({"fractions": (0.0,)}, "fractions"), ({"fractions": (1.5,)}, "fractions"),
                           ({"steps": 0}, "steps"), ({"batch": 2.5}, "batch"), ({"seed": "x"}, "seed"),
                           ({"finetune_seeds": 0}, "finetune_seeds"), ({"finetune_seeds": 1.5}, "finetune_seeds")]:
        with pytest.raises(InputError, match=f"^{field}: "):
            FewshotJob(**{k: v for k, v in {**job.to_dict(), **changes}.items() if k != "kind"}).validate()
    with pytest.raises(InputError, match="unknown field.*epoch\\b"):
        FewshotJob.from_dict({**job.to_dict(), "epoch": 3})
    assert FewshotJob.from_dict(job.to_dict()) == job  # the config file round-trips


def test_progress_events_and_the_stop():
    events, stop = [], threading.Event()
    log = EventLog(Path("/dev/null"))
    log.write = lambda event, **fields: events.append({"event": event, "ts": time.time(), **fields})
    progress = _Progress(log, stop, parts=4)
    progress("finetune 10%: train", 1, 2)
    progress("finetune 10%: train", 2, 2)
    progress("probe 10%: features", 1, 3)
    assert [(e["task"], e["done"], e["part"]) for e in events] == [
        ("finetune 10%: train", 1, 1), ("finetune 10%: train", 2, 1), ("probe 10%: features", 1, 2)]
    p = job_progress([{"event": "priority", "ts": 0.0}, *events], "running", kind="label_efficiency")
    assert p.phase == "few-shot" and (p.done, p.total) == (1, 3) and "part 2 of 4" in p.label
    loading = job_progress([{"event": "phase", "phase": "prepare", "ts": 0.0}], "running", kind="label_efficiency")
    assert loading.label == "loading the student and the dataset"
    assert job_progress(events, "cancelled", kind="label_efficiency").label == "cancelled"  # no steps to count
    stop.set()
    with pytest.raises(Cancelled):
        progress("probe 10%: features", 2, 3)


def test_a_background_fewshot_job_gives_the_librarys_curve_and_the_pages_show_it(cold_app_workspace, one_thread):
    from relviz.data import NuScenesLidarSeg
    from relviz.eval.finetune import label_efficiency
    from relviz.models.checkpoint import load_student

    job = _job(cold_app_workspace)
    store = JobStore(load_settings(), priority=JobPriority(niceness=10, threads=1))
    submitted = store.submit_fewshot(job)
    assert submitted.kind == "label_efficiency" and submitted.name == "few-shot student"
    done = wait_for(lambda: (j := store.get(submitted.id)).status not in ("running", "queued") and j, 240,
                    what="the few-shot job to end")
    assert done.status == "succeeded", store.log_tail(done)
    result = read_result(done.run_dir)
    events, _ = read_events(done.events_path)
    marks = [e["event"] for e in events if e["event"] != "heartbeat"]
    assert marks[:2] == ["priority", "phase"] and marks[-1] == "done" and events[-1]["event"] == "done"
    # 2 selections x (2 fine-tuning seeds, probe)
    assert {e["parts"] for e in events if e["event"] == "fewshot"} == {6}
    assert {e["task"].split(":")[0] for e in events if e["event"] == "fewshot"} >= {
        "finetune 10%, seed 0", "finetune 10%, seed 1", "probe 10%"}
    assert result["job"]["finetune_seeds"] == 2 and result["finetune_seeds"] == [0, 1] == job.seeds
    assert all(r["finetune"]["seeds"] == [0, 1] for r in result["runs"]) and events[-1]["finetune_seeds"] == [0, 1]

    # the same computation in this process, on the same thread count: the same numbers, exactly
    model, _ = load_student(job.checkpoint)
    assert job.splits == ("mini_val", "mini_train")  # a nuScenes dataroot's defaults
    val = NuScenesLidarSeg(job.dataroot, version=job.version, split="mini_val", load_images=False)
    train = NuScenesLidarSeg(None, version=job.version, split="mini_train", load_images=False, nusc=val.nusc)
    direct = label_efficiency(model, train, val, job.fractions, seed=0, finetune_seeds=[0, 1], steps=2, batch=1,
                              probe={"epochs": 5, "max_per_class": 100})
    for key in ("fractions", "frame_fraction", "finetune", "finetune_per_seed", "linear_probe"):
        assert result[key] == direct[key], key
    assert [[s["loss"] for s in r["finetune"]["seed_runs"]] for r in result["runs"]] == \
        [[s["loss"] for s in r["finetune"]["seed_runs"]] for r in direct["runs"]]

    # the Label efficiency page shows the job's curve and table: the library's numbers for that result
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/fewshot.py")
    at.run()
    assert not at.exception, at.exception
    expected = checkpoint_label_efficiency({curve_label("test-relational", result): result})
    assert expected["curve"].iloc[0] == "test-relational · synthetic-mini (nuScenes, 16 classes)"
    table = at.dataframe[0].value  # the curves' table, then the differences'
    assert list(table["checkpoint"]) == list(expected["curve"])
    assert list(table["mIoU"]) == list(expected["mean"])
    # the test set's val split is one scene: no interval, the reason instead, and the frames actually labelled
    assert (table["95% interval (val scenes)"] == "-").all() and expected["low"].isna().all()
    assert table["why no interval"].str.contains("an interval needs at least 10 scenes").all()
    assert list(table["labelled"]) == list(expected["labelled"]) and "(requested " in table["labelled"].iloc[0]
    differences = at.dataframe[1].value
    want = finetune_minus_probe_frame({"test-relational": result})
    assert list(differences["difference"]) == list(want["difference"])
    assert differences["no_interval"].notna().all() and list(differences["per_scene"]) == list(want["per_scene"])
    seeds = at.dataframe[2].value  # each fraction's fine-tuning seeds, their values and mean
    assert list(seeds["seeds"]) == ["0, 1"] * 2 and list(seeds["mean"]) == result["finetune"]
    assert list(seeds["mIoU per seed"]) == [", ".join(f"{v:.3f}" for v in vs) for vs in result["finetune_per_seed"]]
    assert (seeds["95% interval (seeds and scenes)"] == "-").all()
    assert seeds["why no interval"].str.contains("an interval needs at least 10 scenes").all()
    # and the Jobs page lists it as finished, without training steps
    at.switch_page("app_pages/jobs.py")
    at.run()
    assert not at.exception, at.exception
    row = at.dataframe[0].value.set_index("id").loc[submitted.id]
    assert row["status"] == "succeeded" and row["phase"] == "finished" and row["step"] == ""


def test_a_cancelled_fewshot_job_resumes_with_the_next_selection(cold_app_workspace, tmp_path):
    job = _job(cold_app_workspace, finetune_seeds=1)  # resuming is under test here, not the seeds (below)
    run = tmp_path / "run"
    run.mkdir()

    def cancel_after_first_selection():
        wait_for(lambda: list((run / "fewshot").glob("*.json")), 240, 0.05, "a finished selection")
        os.kill(os.getpid(), signal.SIGTERM)  # what JobStore.cancel sends; the job's handler takes it

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=cancel_after_first_selection)
    killer.start()
    assert run_fewshot_job(job, run) == {"status": "cancelled"}
    killer.join()
    assert signal.getsignal(signal.SIGTERM) is previous  # the job's handlers are removed when it ends
    events, offset = read_events(run / "events.jsonl")
    assert events[-1]["event"] == "cancelled" and events[-1]["kept"] == 1 and read_result(run) is None

    assert run_fewshot_job(job, run) == {"status": "succeeded"}
    resumed, _ = read_events(run / "events.jsonl", offset)
    tasks = {e["task"].split(":")[0] for e in resumed if e["event"] == "fewshot"}
    # only the selection the first launch did not finish, each fine-tuning seed a part
    assert tasks == {"finetune 25%, seed 0", "probe 25%"}
    assert {e["parts"] for e in resumed if e["event"] == "fewshot"} == {2}
    result = read_result(run)
    assert result["fractions"] == [0.1, 0.25] and all(m is not None for m in result["finetune"])

    # a job with other fine-tuning seeds recomputes them, and the event says why
    from relviz.jobs.fewshot import finished_selections

    log = EventLog(run / "events.jsonl")
    assert finished_selections(run, _job(cold_app_workspace, finetune_seeds=3), log) == {}
    reasons = [e["reason"] for e in read_events(run / "events.jsonl")[0] if e["event"] == "fewshot_discarded"]
    assert reasons == ["computed with other fine-tuning seeds than [0, 1, 2]"] * 2
    before = len(read_events(run / "events.jsonl")[0])

    # a checkpoint file changed since: its saved selections are recomputed, and the event says why
    os.utime(job.checkpoint, ns=(time.time_ns(), time.time_ns()))
    (run / "label_efficiency.json").unlink()
    saved = sorted((run / "fewshot").glob("*.json"))
    saved[0].write_text("{not json")  # and a damaged one
    assert finished_selections(run, job, log) == {}
    discarded = {e["file"]: e["reason"] for e in read_events(run / "events.jsonl")[0][before:]
                 if e["event"] == "fewshot_discarded"}
    assert discarded == {saved[0].name: "the file is damaged",
                         saved[1].name: "computed with another version of the checkpoint file"}


def test_the_page_lists_both_layouts_and_labels_a_kitti_curve_with_its_format(cold_app_workspace, one_thread):
    """A few-shot job on a SemanticKITTI folder of the workspace: the launch form lists it beside the
    nuScenes dataset, and its curve is drawn in a panel of its own named with the format and 19 classes."""
    from relviz.data.synthetic_kitti import KittiSynthConfig, generate_kitti

    kitti = generate_kitti(cold_app_workspace / "datasets" / "tiny-kitti",
                           KittiSynthConfig(seed=3, sequences=2, scans_per_sequence=1, beams=16, azimuth_steps=512))
    job = FewshotJob(_job(cold_app_workspace).checkpoint, str(kitti), **{**SCHEDULE, "fractions": (1.0,), "steps": 1,
                                                                        "probe_epochs": 3, "probe_per_class": 50})
    store = JobStore(load_settings(), priority=JobPriority(niceness=10, threads=1))
    submitted = store.submit_fewshot(job)
    done = wait_for(lambda: (j := store.get(submitted.id)).status not in ("running", "queued") and j, 240,
                    what="the few-shot job to end")
    assert done.status == "succeeded", store.log_tail(done)
    result = read_result(done.run_dir)
    assert (result["dataset"], result["format"], len(result["classes"])) == ("tiny-kitti", "semantickitti", 19)

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("app_pages/fewshot.py")
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="fs_dataset").options == ["synthetic-mini (nuScenes)", "tiny-kitti (SemanticKITTI)"]
    table = at.dataframe[0].value
    assert set(table["checkpoint"]) == {"test-relational · tiny-kitti (SemanticKITTI, 19 classes)"}
    assert list(table["mIoU"]) == list(checkpoint_label_efficiency({"k": result})["mean"])
    figure = at.get("plotly_chart")[0].proto.spec
    assert "tiny-kitti (SemanticKITTI, 19 classes)" in figure  # the panel's title


def test_a_folder_of_another_nuscenes_version_is_read_in_that_version_with_its_splits(tmp_path):
    from relviz.jobs.fewshot import layout_defaults

    for folder in ("trainval/v1.0-trainval", "mini/v1.0-mini"):  # the evidence world's or the OOD bench's
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "scene.json").write_text("[]")  # what makes a folder a nuScenes version
    assert layout_defaults(tmp_path / "trainval", "nuscenes") == ("v1.0-trainval", "val", "train")
    assert layout_defaults(tmp_path / "mini", "nuscenes") == ("v1.0-mini", "mini_val", "mini_train")
    assert layout_defaults(tmp_path / "any", "semantickitti")[1:] == ("val", "train")
