"""Compare losses: checkpoints side by side in one shared PCA basis, with the teacher's values."""

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages import common
from relviz.metrics import fit_pca, sample_per_class
from relviz.viz import explain

st.title("Compare losses")
s = common.settings()
ckpts = [c for c in common.student_checkpoints(s) if c.error is None]
if len(ckpts) < 2:
    st.info("Two or more student checkpoints are needed (the demo students, or runs from the Jobs page).")
    st.stop()
labels = [c.label for c in ckpts]
# the URL's choice, else the active checkpoints chosen on Home, else the first three
wanted = [x for x in dict.fromkeys((common.query_param("ckpts") or "").split(",")) if x in labels] or \
    [x for x in st.session_state.get("active_checkpoints", []) if x in labels] or labels[:3]
chosen = st.multiselect("Checkpoints (2 to 4)", labels, default=wanted[:4], max_selections=4, key="cmp_ckpts")
c1, c2 = st.columns(2)
n_samples = c1.slider("val keyframes", 1, 16, 4, key="cmp_n")
per_class = c2.select_slider("points per class", [100, 250, 500, 1000, 2000], value=500, key="cmp_pc")
common.set_query_params(ckpts=",".join(chosen))
if len(chosen) < 2:
    st.warning("Choose at least two checkpoints.")
    st.stop()

try:
    root = str(common.dataset_root(s))
    ref = common.val_features(None, root, n_samples)
    rows, samples = [], {}
    with st.status("computing features and metrics", expanded=False) as status:
        for label in chosen:
            info = ckpts[labels.index(label)]
            d = common.val_features(info, root, n_samples)
            m = common.structure(info, root, n_samples, per_class, 0)
            rows.append({"checkpoint": label, "loss": info.loss, **{k: m[k] for k in ("uniformity", "tolerance", "gap",
                                                                                     "zeroshot_miou")},
                         "_tpc": m["tolerance_per_class"], "_iou": m["zeroshot_iou"]})
            idx = sample_per_class(d["labels"], per_class=per_class, seed=0)
            samples[label] = (d["features"][idx], d["labels"][idx])
        t = common.structure(None, root, n_samples, per_class, 0)
        rows.append({"checkpoint": "teacher", "loss": "-", **{k: t[k] for k in ("uniformity", "tolerance", "gap",
                                                                                   "zeroshot_miou")},
                     "_tpc": t["tolerance_per_class"], "_iou": t["zeroshot_iou"]})
        status.update(label="done", state="complete")
except Exception as e:
    common.error_panel("Cannot compare these checkpoints", e)
    st.stop()

few = {label: common.fewshot(ckpts[labels.index(label)], root) for label in chosen}
for r in rows:
    r["fewshot_miou"] = (few.get(r["checkpoint"]) or {}).get("miou")
table = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
st.dataframe(table.style.format({c: "{:.3f}" for c in ("uniformity", "tolerance", "gap", "zeroshot_miou",
                                                        "fewshot_miou")}, na_rep="-"),
             hide_index=True, width="stretch",
             column_config={k: st.column_config.NumberColumn(label, help=explain.help_text(k))
                            for k, (label, _) in explain.METRICS.items()})
st.caption(f"U, T, G and zero-shot mIoU: up to {per_class:,} points per class (seed 0) from the first {n_samples} "
           f"mini_val keyframes. Few-shot mIoU: every mini_val frame (a different sample); computed when asked, "
           f"then stored. Hover a column name for its meaning.")
missing = [label for label, f in few.items() if f is None]
if missing and st.button(f"Compute few-shot mIoU ({len(missing)} checkpoint{'s' if len(missing) > 1 else ''})",
                         key="cmp_fewshot", help="Trains one linear probe per checkpoint (seconds each on CPU)."):
    try:
        with st.status("training linear probes", expanded=True) as status:
            for i, label in enumerate(missing, start=1):
                status.write(f"{label} ({i}/{len(missing)})")
                common.fewshot(ckpts[labels.index(label)], root, compute=True)
            status.update(label="few-shot probes done", state="complete")
    except Exception as e:
        common.error_panel("Cannot compute the few-shot mIoU", e)
        st.stop()
    st.rerun()

# one shared basis: fitted on the teacher's features, every checkpoint projected into it
ref_idx = sample_per_class(ref["labels"], per_class=per_class, seed=0)
pca = fit_pca(ref["features"][ref_idx], k=2)
fig = make_subplots(rows=1, cols=len(chosen) + 1, subplot_titles=chosen + ["teacher"], shared_xaxes=True,
                    shared_yaxes=True)
for col, (label, (z, y)) in enumerate(list(samples.items()) + [("teacher", (ref["features"][ref_idx],
                                                                               ref["labels"][ref_idx]))], start=1):
    p = pca.transform(z).numpy()
    yy = y.numpy()
    for c in np.unique(yy):
        m = yy == c
        name = common.CLASS_NAMES[int(c) - 1]
        fig.add_trace(go.Scattergl(x=p[m, 0], y=p[m, 1], mode="markers", name=name, legendgroup=name,
                                   showlegend=col == 1, marker=dict(size=3, color=common.COLOR_MAP[name])),
                      row=1, col=col)
fig.update_layout(height=420, legend_itemsizing="constant")
st.plotly_chart(fig, width="stretch", key="cmp_pca")
tpc = pd.DataFrame([{"checkpoint": r["checkpoint"], "class": common.CLASS_NAMES[c - 1], "tolerance": v}
                    for r in rows for c, v in r["_tpc"].items()])
st.plotly_chart(px.bar(tpc, x="class", y="tolerance", color="checkpoint", barmode="group",
                       title="Tolerance per class"), width="stretch", key="cmp_tpc")
iou = pd.DataFrame([{"checkpoint": r["checkpoint"], "class": common.CLASS_NAMES[c - 1], "IoU": v}
                    for r in rows for c, v in r["_iou"].items()])
st.plotly_chart(px.bar(iou, x="class", y="IoU", color="checkpoint", barmode="group", title="Zero-shot IoU per class"),
                width="stretch", key="cmp_iou")
