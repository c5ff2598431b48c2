"""The dashboard from a source checkout: `streamlit run dashboard/app.py`, in the repository's root, opens the
same app as `csrs dashboard` (the repository's .streamlit/config.toml keeps it on this machine with usage
statistics off, and every page runs the app's access guard first)."""
import runpy

from csrs_core.dashboard.launch import app_path

runpy.run_path(str(app_path()), run_name="__main__")
