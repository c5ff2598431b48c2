"""Rewrite every table of docs/models.md that follows a `csrs report ... --format markdown` command with
the table that command prints today (from the shipped records; no sampling). tests/test_docs.py checks
that they agree; run this after the shipped models or the report's columns change.

Usage: python scripts/refresh_docs_tables.py [docs/models.md]"""
import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

from csrs_core.cli import commands as cli

ROOT = Path(__file__).resolve().parents[1]


def printed_table(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        if cli.main(shlex.split(command)[1:]) != 0:
            raise SystemExit(f"failed: {command}")
    return "\n".join(line for line in out.getvalue().splitlines() if line.startswith("|"))


def refresh(page: Path) -> int:
    text, changed, pos = page.read_text(), 0, 0
    while match := re.compile(r"`(csrs report [^`]*--format markdown)`").search(text, pos):
        table = re.compile(r"\n(\|.*?)\n\n", flags=re.S).search(text, match.end())
        new = printed_table(match.group(1))
        changed += new != table.group(1)
        text = text[:table.start(1)] + new + text[table.end(1):]
        pos = table.start(1) + len(new)
    page.write_text(text)
    return changed


if __name__ == "__main__":
    import os
    os.chdir(ROOT)
    page = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "models.md"
    print(f"{refresh(page)} table(s) rewritten in {page}")
