"""The documentation cannot rot: every `csrs` command in README.md and docs/ parses with today's options
and settings, the `csrs report` commands on the shipped checkpoints run, and every relative link leads
to a file that exists."""
import re
import shlex
from pathlib import Path

import pytest

from csrs_core.cli import commands as cli
from csrs_core.settings import CERTIFY, REPORT, TRAIN, check_settings

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETTINGS = {"certify": CERTIFY, "train": TRAIN, "report": REPORT}


def commands(page: Path) -> list[str]:
    """The `csrs ...` commands of a page: in its bash blocks (continuation lines joined, comments dropped)
    and those in its inline code that name shipped files (the others mention a command, they do not give
    one); commands with a placeholder (`...`, `…`, `DIR`) are left out."""
    text = page.read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += [line.split(" #", 1)[0].strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
    lines += [c for c in re.findall(r"`(csrs [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
              if "checkpoints/" in c]
    return [line for line in lines if line.startswith("csrs ") and not re.search(r"\.\.\.|…|\bDIR\b|ID$", line)]


ALL = [(page.relative_to(ROOT).as_posix(), line) for page in PAGES for line in commands(page)]


def test_the_pages_hold_commands():
    assert len(ALL) >= 8 and {line.split()[1] for _, line in ALL} >= {"certify", "report", "train", "import"}


@pytest.mark.parametrize("page,line", ALL, ids=[f"{p}:{i}" for i, (p, _) in enumerate(ALL)])
def test_every_documented_command_parses_with_allowed_settings(page, line):
    if "--help" in line:
        with pytest.raises(SystemExit) as stop:
            cli.build_parser().parse_args(shlex.split(line)[1:])
        assert stop.value.code == 0
        return
    args = cli.build_parser().parse_args(shlex.split(line)[1:])
    if args.command in SETTINGS:
        check_settings(SETTINGS[args.command], vars(args))


REPORTS = [line for _, line in ALL if line.startswith("csrs report") and "checkpoints/" in line]


@pytest.mark.parametrize("line", REPORTS)
def test_the_documented_reports_run_on_the_shipped_records(line, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert cli.main(shlex.split(line)[1:]) == 0
    assert "cohen" in capsys.readouterr().out


def test_every_relative_link_leads_to_a_file():
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert missing == []


def test_the_shipped_results_tables_are_what_report_prints_today(monkeypatch, capsys):
    """Every `csrs report ... --format markdown` of docs/models.md is followed by the very table it prints."""
    monkeypatch.chdir(ROOT)
    text = (ROOT / "docs" / "models.md").read_text()
    checked = 0
    for match in re.finditer(r"`(csrs report [^`]*--format markdown)`", text):
        table = re.search(r"\n(\|.*?)\n\n", text[match.end():], flags=re.S).group(1).splitlines()
        assert cli.main(shlex.split(match.group(1))[1:]) == 0
        printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
        assert printed == table, match.group(1)
        checked += 1
    assert checked >= 3
