"""relviz Streamlit entry point: the frame around the pages (``streamlit run app.py``)."""

import streamlit as st

st.set_page_config(page_title="relviz", page_icon=":material/scatter_plot:", layout="wide")

pages = {
    "relviz": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
}
st.navigation(pages).run()
