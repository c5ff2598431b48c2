"""Step 2: pytest on the tests that skip without a GPU, then on those that run differently on one."""
from __future__ import annotations

import ast
import importlib.util
import sys
import time
from pathlib import Path

from gpu_check_steps.framework import ROOT, Check, Skip, StepFailed, step
from gpu_check_steps.processes import run_command


def find_gpu_tests(tests_dir: Path, streamlit_present: bool) -> tuple[list, list, dict]:
    """(tests that skip without a GPU, tests that run differently on one, files left out and why).

    A test skips without a GPU when a decorator of it (or the file's pytestmark) mentions cuda; it
    runs differently when it launches torchrun, itself or through a helper function of its file
    (device auto gives NCCL and a GPU per rank there).
    Files that import Streamlit (or the dashboard) at module level are left out when it is absent."""
    needs_gpu, sensitive, excluded = [], [], {}
    for path in sorted(tests_dir.glob("test_*.py")):
        src = path.read_text()
        tree = ast.parse(src)
        rel = path.relative_to(ROOT).as_posix()
        imported = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported |= set(node.module.split("."))
        needs = imported & {"streamlit", "dashboard", "dashboard_fixtures"}
        if needs and not streamlit_present:
            excluded[rel] = f"imports {', '.join(sorted(needs))} (Streamlit is not installed)"
            continue
        file_mark = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                        and "cuda" in (ast.get_source_segment(src, n) or "") for n in tree.body)
        launchers = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("test")
                     and "torch.distributed.run" in (ast.get_source_segment(src, n) or "")}
        for node, prefix in _test_functions(tree):
            decorators = " ".join(ast.get_source_segment(src, d) or "" for d in node.decorator_list)
            calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            node_id = f"{rel}::{prefix}{node.name}"
            if file_mark or "cuda" in decorators:
                needs_gpu.append(node_id)
            elif "torch.distributed.run" in (ast.get_source_segment(src, node) or "") or calls & launchers:
                sensitive.append(node_id)
    return needs_gpu, sensitive, excluded


def _test_functions(tree):
    """(test function node, 'Class::' prefix or '') for the module's tests and its Test classes' tests."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            yield node, ""
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef) and sub.name.startswith("test"):
                    yield sub, f"{node.name}::"


@step("cuda_tests", "pytest on the tests that skip without a GPU", estimate=(40, 4), cap=(100, 20))
def step_cuda_tests(ctx: Check, res: dict) -> None:
    """Runs the tests that skip without a GPU, then (a second pytest, so a hang there cannot hide
    the first group's result) those that run differently on one (torchrun with device auto). The
    dry run runs the first group only (on a CPU they skip at once) and lists the second."""
    streamlit_present = importlib.util.find_spec("streamlit") is not None
    needs_gpu, sensitive, excluded = find_gpu_tests(ROOT / "tests", streamlit_present)
    res.update(skip_without_gpu=needs_gpu, differ_on_gpu=sensitive, excluded_files=excluded)
    ctx.log("grep -n cuda tests/*.py:")
    for path in sorted((ROOT / "tests").glob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "cuda" in line:
                ctx.log(f"  {path.relative_to(ROOT)}:{i}: {line.strip()[:110]}")
    for f, why in excluded.items():
        ctx.log(f"left out: {f}: {why}")
    ctx.log(f"skip without a GPU ({len(needs_gpu)}): {', '.join(needs_gpu) or 'none'}")
    ctx.log(f"run differently on a GPU, torchrun on device auto ({len(sensitive)}): {', '.join(sensitive) or 'none'}")
    if not needs_gpu and not sensitive:
        raise Skip("no test in tests/ skips without a GPU or launches torchrun")
    failed = []
    if needs_gpu:
        failed += _pytest(ctx, res, "skip_without_gpu", needs_gpu)
    if sensitive and ctx.dry:
        ctx.log("dry run: the torchrun tests are only listed (on a CPU they are the ordinary CPU tests)")
    elif sensitive:
        failed += _pytest(ctx, res, "differ_on_gpu", sensitive)
    if failed:
        raise StepFailed("; ".join(failed))


def _pytest(ctx: Check, res: dict, group: str, node_ids: list) -> list:
    """Runs pytest on node_ids within the step's time; returns a failure message, if any."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *node_ids]
    ctx.log(f"$ python {' '.join(cmd[1:])}")
    t = time.monotonic()
    rc, out = run_command(cmd, timeout=ctx.left() - 2)
    lines = out.strip().splitlines()
    res[group + "_run"] = {"command": " ".join(cmd[1:]), "rc": rc, "seconds": round(time.monotonic() - t, 1),
                           "summary": lines[-1] if lines else "", "output": out[-20_000:]}
    for line in lines[-40:]:
        ctx.log(f"| {line}")
    return [] if rc == 0 else [f"{group}: pytest exit code {rc}: {lines[-1] if lines else ''}"]
