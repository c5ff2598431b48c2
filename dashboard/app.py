"""CSRS dashboard entry point: `csrs dashboard` (or `streamlit run dashboard/app.py`)."""
from pathlib import Path

import streamlit as st

from dashboard.common import access_problem

st.set_page_config(page_title="CSRS: certified cost-sensitive robustness", layout="wide")
problem = access_problem()
if problem:
    st.error(problem)
    st.stop()
HERE = Path(__file__).parent
pages = [
    st.Page(HERE / "pages" / "explore.py", title="Explore & compare", default=True),
    st.Page(HERE / "pages" / "certify.py", title="Certify"),
    st.Page(HERE / "pages" / "train.py", title="Train"),
    st.Page(HERE / "pages" / "checkpoints.py", title="Checkpoints"),
]
st.navigation(pages).run()
