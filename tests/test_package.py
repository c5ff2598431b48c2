"""The installable package: a wheel with the `csrs` command, a CLI that explains every option and
reports progress as a person expects (bar on a terminal, plain lines in logs, nothing with --quiet)."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from csrs_core.cli.commands import build_parser
from csrs_core.settings import CERTIFY, REPORT, TRAIN

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_only_csrs_core_with_the_dashboard_and_the_demo(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "csrs = csrs_core.cli.commands:main_exit" in entry
    assert {n.split("/")[0] for n in names} == {"csrs_core", wheel.name.split("-py3")[0] + ".dist-info"}
    source = {str(p.relative_to(REPO)) for p in (REPO / "csrs_core").rglob("*.py")}
    assert {n for n in source if n.endswith("__init__.py")} <= set(names)  # every sub-package is packaged
    assert {n for n in names if n.endswith(".py")} <= source                # and nothing else (no stale build)
    assert "csrs_core/sampling/stage_a.py" in names and "csrs_core/dashboard/app.py" in names
    assert "csrs_core/dashboard/views/explore.py" in names and "csrs_core/dashboard/assets/cost_grid.js" in names
    assert not any("/pages/" in n for n in names)  # Streamlit would serve a pages/ folder without the guard
    for case in ("cifar10", "ham10000"):
        assert f"csrs_core/shipped/{case}/cohen.pt" in names and f"csrs_core/shipped/{case}/test-sample.npz" in names
        assert any(n.startswith(f"csrs_core/shipped/{case}/cohen.certs/") for n in names)
    assert wheel.stat().st_size <= 30 * 2**20


def test_the_installed_dashboard_opens_on_the_demo_from_any_folder(installed_package, tmp_path):
    """Installed (not the source tree), started in an empty folder: the shipped demo, read-only."""
    target, empty = installed_package, tmp_path / "empty"
    empty.mkdir()
    probe = ("import csrs_core, json; from csrs_core.dashboard import common; root = common.checkpoint_root(); "
             "print(json.dumps([csrs_core.__file__, str(root), common.is_demo(root), common.cases(root), "
             "str(common.data_root())]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSRS_")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=empty, env=dict(env, PYTHONPATH=str(target)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    module, root, demo, cases, data = json.loads(out.stdout.splitlines()[-1])
    assert module.startswith(str(target)) and root.startswith(str(target))
    assert demo and {"cifar10", "ham10000"} <= set(cases) and data == str(empty / "data")


def _help(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return {a.dest: a.help for a in sub._actions if a.dest != "help"}


@pytest.mark.parametrize("command, options", [("certify", CERTIFY), ("train", TRAIN), ("report", REPORT)])
def test_every_option_explains_itself_with_its_default(command, options):
    helps = _help(command)
    for name, opt in options.items():
        assert helps[name] and opt.help in helps[name]
        if opt.default is not None:
            assert f"(default {opt.text(opt.default)})" in helps[name], name
    assert "estimation samples" in helps.get("n", "") if command == "certify" else True


def test_exit_codes_are_documented():
    text = build_parser().format_help()
    assert "0 success" in text and "2 bad input" in text and "130 / 143" in text


def _certify(ckpt, *extra):
    return subprocess.run([sys.executable, "-m", "csrs_core", "certify", "--checkpoint", str(ckpt), "--dataset",
                           "synthetic", "--num-examples", "40", "--n0", "10", "--n", "200", "--batch", "64",
                           "--precision", "fp32", "--threads", "1", *extra], capture_output=True, text=True,
                          timeout=300)


def test_progress_is_plain_lines_in_a_log_and_silent_with_quiet(tmp_path, synthetic_checkpoint):
    import shutil
    shutil.copy(synthetic_checkpoint, tmp_path / "m.pt")
    loud = _certify(tmp_path / "m.pt", "--seed", "1")
    assert loud.returncode == 0, loud.stderr
    assert "samples: " in loud.stderr and "/s" in loud.stderr and "\r" not in loud.stderr
    quiet = _certify(tmp_path / "m.pt", "--seed", "2", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr.strip() == ""


def test_report_prints_the_readme_tables_as_markdown(capsys):
    from pathlib import Path

    from csrs_core.cli import commands as cli
    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "ham10000"
    assert cli.main(["report", "--checkpoints", str(shipped), "--cost", "pairwise:1>0", "--eps", "0.5",
                     "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| checkpoint | method | acc | rob_cs |") and lines[1].startswith("|---|")
    assert len(lines) >= 2 + 5 and all(line.count("|") == lines[0].count("|") for line in lines[2:])
