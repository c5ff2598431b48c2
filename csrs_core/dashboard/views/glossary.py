"""Glossary: every term the dashboard uses, with its one meaning."""
import streamlit as st

from csrs_core.dashboard.common import require_access
from csrs_core.dashboard.glossary import GLOSSARY

require_access()  # first, also when this view is reached some other way than app.py
st.title("Glossary")
st.caption("The definitions are those of the paper (docs/design.md in the repository); every page uses these words "
           "with these meanings only.")
for term, meaning in GLOSSARY.items():
    st.markdown(f"**{term}** — {meaning}")
