"""The house's rules, read from the source: stages import each other in one direction only, the shared layer imports
no stage, no module is much over 400 lines, and the model card's layout names every module that exists."""

import ast
from pathlib import Path

from conftest import BUNDLE_ROOT

SCRIPTS = BUNDLE_ROOT / "scripts"
# Each stage may import only the stages before it (and the shared layer, scripts/*.py).
STAGE_ORDER = ("data", "model", "reports", "evaluation", "measurement", "training", "inference")
MAX_LINES = 420  # "~400 lines at most"


def stage_of(path: Path) -> str:
    """The stage package a module belongs to, or "shared" for the modules directly under scripts/."""
    parts = path.relative_to(SCRIPTS).parts
    return parts[0] if len(parts) > 1 else "shared"


def imported_stages(path: Path) -> set[str]:
    """The stages (or "shared") a module imports, function-local imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "scripts" and len(parts) > 1:
                found.add(parts[1] if (SCRIPTS / parts[1]).is_dir() else "shared")
    return found


def modules() -> list[Path]:
    return sorted(p for p in SCRIPTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_stages_are_the_packages_under_scripts():
    packages = {p.name for p in SCRIPTS.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(STAGE_ORDER)


def test_stages_import_each_other_in_one_direction_and_the_shared_layer_imports_no_stage():
    wrong = []
    for path in modules():
        stage = stage_of(path)
        allowed = {"shared"} | (set(STAGE_ORDER[: STAGE_ORDER.index(stage) + 1]) if stage != "shared" else set())
        wrong += [f"{path.relative_to(SCRIPTS)} imports {other}" for other in imported_stages(path) - allowed]
    assert not wrong, "\n".join(wrong)


def test_no_module_is_much_over_400_lines():
    long = {str(p.relative_to(SCRIPTS)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_layout_section_names_every_module():
    layout = (BUNDLE_ROOT / "docs" / "development.md").read_text()

    def named(path: Path) -> bool:
        relative = path.relative_to(BUNDLE_ROOT)
        folder = f"`{relative.parent.as_posix()}/`"
        return str(relative) in layout or path.name in layout or (folder in layout and f"`{path.stem}`" in layout)

    missing = [str(p.relative_to(BUNDLE_ROOT)) for p in modules() if p.stem not in ("__init__", "__main__")]
    missing = [m for m in missing if not named(BUNDLE_ROOT / m)]
    assert not missing, f"docs/development.md's Layout must say where these live: {missing}"
