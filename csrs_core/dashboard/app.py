"""CSRS dashboard entry point: `csrs dashboard` (or `streamlit run csrs_core/dashboard/app.py`).

The pages live in `views/`, not in a folder named `pages/`: Streamlit serves every script of a
`pages/` folder beside the main script as a page of its own, which would never run this guard."""
from pathlib import Path

import streamlit as st

from csrs_core.dashboard.common import require_access

st.set_page_config(page_title="CSRS: certified cost-sensitive robustness", layout="wide")
require_access()
VIEWS = Path(__file__).parent / "views"
pages = [
    st.Page(VIEWS / "explore.py", title="Explore & compare", default=True),
    st.Page(VIEWS / "examples.py", title="Examples"),
    st.Page(VIEWS / "certify.py", title="Certify"),
    st.Page(VIEWS / "train.py", title="Train"),
    st.Page(VIEWS / "checkpoints.py", title="Checkpoints"),
    st.Page(VIEWS / "glossary.py", title="Glossary"),
]
st.navigation(pages).run()
