"""scripts/gpu_check.py --dry-run walks every step on the CPU at tiny sizes, so the GPU machine's
run of the same code paths is not its first."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["environment", "cuda_tests", "throughput", "decisions", "smoothed_classifier", "sequential", "training",
         "distributed"]


def test_dry_run_walks_every_step(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    log = (tmp_path / "gpu_check.log").read_text()
    assert report["dry_run"] and report["device"] == "cpu"
    assert list(report["steps"]) == STEPS
    for name, entry in report["steps"].items():
        assert entry["status"] in ("ok", "skipped"), f"{name}: {entry['status']} {entry['reason']}\n{entry['error']}"
        if entry["status"] == "skipped":
            assert entry["reason"], f"{name} skipped without a reason"
        assert f"] {name}: " in log and f"-- {name}: {entry['status']}" in log
    assert "== summary ==" in log
    assert report["steps"]["throughput"]["status"] == "skipped" or report["steps"]["throughput"]["results"]["stage_a"]
    assert all({"step", "name", "passed", "detail"} <= set(c) for c in report["checks"])
