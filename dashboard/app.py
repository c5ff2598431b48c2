"""CSRS dashboard entry point: streamlit run dashboard/app.py"""
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

st.set_page_config(page_title="CSRS: certified cost-sensitive robustness", layout="wide")
HERE = Path(__file__).parent
pages = [
    st.Page(HERE / "pages" / "explore.py", title="Explore & compare", default=True),
    st.Page(HERE / "pages" / "certify.py", title="Certify"),
    st.Page(HERE / "pages" / "train.py", title="Train"),
    st.Page(HERE / "pages" / "checkpoints.py", title="Checkpoints"),
]
st.navigation(pages).run()
