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

with st.expander("Environment", expanded=False):
    st.write(f"Python {info['python']} · torch CUDA build {dev['torch_cuda_build'] or 'none'} · "
             f"{dev['cpu_threads']} CPU threads")
    st.dataframe(pd.DataFrame([{"package": k, "version": v or "not installed"} for k, v in info["packages"].items()]),
                 hide_index=True)
    st.dataframe(pd.DataFrame([{"sparse backend": k, "available": v} for k, v in info["sparse_backends"].items()]),
                 hide_index=True)
