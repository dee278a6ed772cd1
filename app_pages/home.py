"""Home: what this installation and workspace hold (the same facts as ``relviz info``)."""

import pandas as pd
import streamlit as st

from relviz.config import ConfigError, load_settings
from relviz.info import collect_info

st.title("relviz")
st.caption("Image-to-lidar distillation: train 3D students of a CLIP teacher, measure their structure, "
           "query them with text.")

try:
    settings = load_settings()
except ConfigError as e:
    st.error(f"The workspace settings cannot be used: {e}")
    st.stop()

info = collect_info(settings)
dev, ws = info["device"], info["workspace"]

c1, c2, c3, c4 = st.columns(4)
c1.metric("Device", f"CUDA: {dev['gpu']}" if dev["cuda_available"] else "CPU")
c2.metric("Sparse backend", settings.sparse_backend)
c3.metric("Datasets", len(ws["datasets"]))
c4.metric("Runs", len(ws["runs"]))

st.subheader("Workspace")
st.write(f"Root: `{ws['home']}`" + ("" if ws["exists"] else " (not created yet)"))
if ws["config_file"]:
    st.write(f"Settings file: `{ws['config_file']}`")
if ws["datasets"]:
    st.dataframe(pd.DataFrame([{"dataset": k, "versions": ", ".join(v)} for k, v in ws["datasets"].items()]),
                 hide_index=True)
else:
    st.info("No dataset yet. `relviz synth` (or `make app`) generates the synthetic one.")
st.write(f"Cache: {ws['cache_bytes'] / 2**20:.1f} MiB · jobs: "
         + (", ".join(f"{k} {v}" for k, v in ws["jobs"].items()) or "none"))

st.subheader("Dataset")
names = sorted(ws["datasets"]) or [settings.dataset]
current = st.session_state.get("dataset", settings.dataset)
st.session_state["dataset"] = st.selectbox("Dataset for every page", names,
                                           index=names.index(current) if current in names else 0, key="home_dataset")
from relviz.workspace import pending_caches  # noqa: E402

pending = pending_caches(settings, settings.dataset_root(st.session_state["dataset"]))
if pending:
    st.info("Still being prepared: " + "; ".join(pending) + ". The pages compute what is missing on their first "
            "visit (slower); `relviz warm` (run by `make app`) prepares it ahead.")

st.subheader("Checkpoints")
from app_pages import common  # noqa: E402

rows = []
for c in common.student_checkpoints(settings):
    row = {"checkpoint": c.label, "loss": c.loss or "-", "source": c.provenance,
           "status": c.error or (f"partial: {c.partial}" if c.partial else "ok")}
    if c.error is None and c.kind == "checkpoint":
        from relviz.models.checkpoint import read_metadata

        metrics = read_metadata(c.path).get("metrics") or {}
        row.update({k: metrics.get(k) for k in ("uniformity", "tolerance", "gap", "zeroshot_miou")})
    rows.append(row)
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    ok = [r["checkpoint"] for r in rows if r["status"] == "ok"]
    common.set_active_checkpoints(st.multiselect("Active checkpoints (pre-selected on Compare)", ok,
                                                 default=common.active_checkpoints(ok) or ok[:3], key="home_active"))
else:
    st.info("No student checkpoint yet: `relviz demo` builds the demo students, the Jobs page trains more.")
from relviz.teacher.demo import DEMO_TEACHER_PATH  # noqa: E402

teacher_meta = DEMO_TEACHER_PATH
st.write(f"Teacher: `{settings.teacher}`" + (f" (demo teacher: `{teacher_meta}`)" if settings.teacher == "demo" else ""))
if settings.teacher == "demo":
    from relviz.viz.explain import DEMO_TEACHER_NOTE  # noqa: E402

    st.info(DEMO_TEACHER_NOTE)

with st.expander("Environment", expanded=False):
    st.write(f"Python {info['python']} · torch CUDA build {dev['torch_cuda_build'] or 'none'} · "
             f"{dev['cpu_threads']} CPU threads")
    st.dataframe(pd.DataFrame([{"package": k, "version": v or "not installed"} for k, v in info["packages"].items()]),
                 hide_index=True)
    st.dataframe(pd.DataFrame([{"sparse backend": k, "available": v} for k, v in info["sparse_backends"].items()]),
                 hide_index=True)
