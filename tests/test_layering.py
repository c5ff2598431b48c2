"""The library stands on its own: its front ends (the command line and the dashboard) are leaves.

Every module of csrs_core outside cli/ and dashboard/ (and the `python -m csrs_core` entry point) is
read with `ast`, imports inside functions included, and may import neither front end; only the
dashboard imports Streamlit."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "csrs_core"
FRONT_ENDS = ("cli", "dashboard")


def imported_modules(source: str, module: str) -> set[str]:
    """Every module that `source` (the text of dotted module `module`) imports, relative ones resolved."""
    package = module.split(".")
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[:len(package) - node.level]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def library_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)  # a package as pkg.__init__


def front_end_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "csrs_core" and parts[1] in FRONT_ENDS else None


def is_front_end(module: str) -> bool:
    return front_end_of(module) is not None or module == "csrs_core.__main__"


def test_the_detector_sees_absolute_relative_and_nested_imports():
    source = ("import os\nfrom csrs_core.cli.options import to_argv\nfrom ..dashboard import common\n"
              "def f():\n    from .. import cli\n")
    found = imported_modules(source, "csrs_core.sampling.stage_a")
    assert {"csrs_core.cli.options", "csrs_core.dashboard", "csrs_core.cli"} <= found
    assert {front_end_of(m) for m in found} >= {"cli", "dashboard"}


@pytest.mark.parametrize("path,module", [m for m in library_modules() if not is_front_end(m[1])],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_no_library_module_imports_a_front_end(path, module):
    upward = sorted(m for m in imported_modules(path.read_text(), module) if front_end_of(m))
    assert not upward, f"{module} imports {upward}: the library must not depend on its front ends"


def test_only_the_dashboard_imports_streamlit():
    outside = [module for path, module in library_modules() if front_end_of(module) != "dashboard"
               and any(m == "streamlit" or m.startswith("streamlit.")
                       for m in imported_modules(path.read_text(), module))]
    assert outside == []
