"""relviz Streamlit entry point: the frame around the pages (``streamlit run app.py``)."""

import streamlit as st

from relviz.serve import freeze_imports

st.set_page_config(page_title="relviz", page_icon=":material/scatter_plot:", layout="wide")

pages = {
    "relviz": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Explore": [st.Page("pages/structure.py", title="Feature structure", icon=":material/scatter_plot:"),
                st.Page("pages/compare.py", title="Compare losses", icon=":material/compare:"),
                st.Page("pages/evidence.py", title="Evidence", icon=":material/insights:"),
                st.Page("pages/fewshot.py", title="Label efficiency", icon=":material/show_chart:")],
    "Query": [st.Page("pages/zeroshot.py", title="Zero-shot", icon=":material/search:")],
    "Train": [st.Page("pages/jobs.py", title="Jobs", icon=":material/play_circle:"),
              st.Page("pages/experiments.py", title="Experiments", icon=":material/table_chart:"),
              st.Page("pages/toy.py", title="Toy experiment", icon=":material/science:")],
}
try:
    st.navigation(pages).run()
finally:  # also after st.stop(): what this run imported is never scanned by the garbage collector again
    freeze_imports()
