"""Starting the dashboard: folders fixed at launch, loopback only unless asked, no telemetry."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def app_path() -> Path:
    import dashboard
    return Path(dashboard.__file__).resolve().parent / "app.py"


def streamlit_command(address: str, port: int) -> list[str]:
    """The `streamlit run` command with the server settings that do not depend on a config file
    (the one in .streamlit/ is read only from the current folder)."""
    return [sys.executable, "-m", "streamlit", "run", str(app_path()),
            "--server.address", address, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            "--server.enableCORS", "true", "--server.enableXsrfProtection", "true"]


def launch(checkpoints: str | None, data: str | None, address: str = "127.0.0.1", port: int = 8501) -> int:
    """Run the dashboard in the foreground until it stops; its exit code."""
    env = dict(os.environ)
    if checkpoints:
        env["CSRS_CHECKPOINTS"] = str(Path(checkpoints).expanduser().resolve())
    if data:
        env["CSRS_DATA"] = str(Path(data).expanduser().resolve())
    env.pop("CSRS_EXPOSED", None)  # only this launch's own --address can turn the host guard off
    if address not in LOOPBACK:
        env["CSRS_EXPOSED"] = address
        print(f"warning: listening on {address}: anyone who can reach this address can use the dashboard",
              file=sys.stderr)
    return subprocess.call(streamlit_command(address, port), env=env)
