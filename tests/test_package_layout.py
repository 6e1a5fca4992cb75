"""The package's shape: which layer may import which."""

from __future__ import annotations

import ast
from pathlib import Path

import batchrun

PACKAGE = Path(batchrun.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def importers_of(module: str, folder: Path) -> list[str]:
    """The files under ``folder`` that import ``module`` or anything inside it."""
    return sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in folder.rglob("*.py")
        if any(name == module or name.startswith(f"{module}.") for name in imported_modules(path))
    )


def test_the_sending_core_never_imports_the_simulator() -> None:
    """--simulate is wired above the sending core: the job hands the session its server."""
    assert importers_of("batchrun.simulator", PACKAGE / "sending") == []


def test_the_import_scan_finds_the_simulator_where_it_is_imported() -> None:
    # The check above would pass on a scan that finds nothing: show it finds the command
    # that serves the simulator (an import inside a function) and the job's own wiring.
    found = importers_of("batchrun.simulator", PACKAGE)
    assert "cli/commands.py" in found
    assert "job.py" in found


# The most lines a module of the package may have (STYLE.md: split by concern, not size).
MAX_MODULE_LINES = 400


def module_lines() -> dict[str, int]:
    """Every module of the package and its number of lines."""
    return {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text("utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }


def test_no_module_is_over_400_lines() -> None:
    sizes = module_lines()
    over = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert over == {}


def test_the_line_count_sees_every_module() -> None:
    # The check above would pass on a count that finds no file, or misses a folder.
    sizes = module_lines()
    assert {"job.py", "jobs/run.py", "sending/session.py", "sheets/xlsx_writer.py"} <= set(sizes)
    assert sizes["sending/session.py"] > 100
