"""relviz Streamlit entry point: the frame around the pages (``streamlit run app.py``).

The pages live in ``app_pages/``, not ``pages/``: Streamlit serves every file of a ``pages/`` folder
next to the entry point as a page of its own, so a link to /zeroshot ran that file alone, without this
frame (no navigation, layout or settings) and listed common.py as a page."""

import streamlit as st

from relviz.serve import freeze_imports
from relviz.viz.labelcolors import app_icon

# the tab icon is drawn here and served by the app itself: a ":material/...:" page icon made the browser
# fetch it from a font host on every page load, which an offline tool must not do
st.set_page_config(page_title="relviz", page_icon=app_icon(), layout="wide")

pages = {
    "relviz": [st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Explore": [st.Page("app_pages/structure.py", title="Feature structure", icon=":material/scatter_plot:"),
                st.Page("app_pages/compare.py", title="Compare losses", icon=":material/compare:"),
                st.Page("app_pages/evidence.py", title="Evidence", icon=":material/insights:"),
                st.Page("app_pages/fewshot.py", title="Label efficiency", icon=":material/show_chart:")],
    "Query": [st.Page("app_pages/zeroshot.py", title="Zero-shot", icon=":material/search:")],
    "Train": [st.Page("app_pages/jobs.py", title="Jobs", icon=":material/play_circle:"),
              st.Page("app_pages/experiments.py", title="Experiments", icon=":material/table_chart:"),
              st.Page("app_pages/toy.py", title="Toy experiment", icon=":material/science:")],
}
try:
    st.navigation(pages).run()
finally:  # also after st.stop(): what this run imported is never scanned by the garbage collector again
    freeze_imports()
