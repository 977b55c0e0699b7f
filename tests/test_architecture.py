"""The layout of the package: data flows one way, and the method layer stays pure."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ppodd"

# Lower layers never import higher ones: config → datasets → method → storage → cell → report and
# cluster → the CLI, with the error family and the atomic writer under everything.
RANK = {"errors": 0, "atomic": 0, "config": 1, "datasets": 2, "method": 3, "storage": 4, "cell": 5,
        "report": 6, "cluster": 6, "cli": 7}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_layers(path: Path) -> set[str]:
    """The ppodd layers a module imports, at module level or inside functions."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "ppodd" else [])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "ppodd" and len(parts) > 1 and parts[1] in RANK:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    layer = _layer(path)
    upward = {other for other in _imported_layers(path) if RANK[other] > RANK[layer]}
    assert not upward, f"{path.relative_to(PACKAGE)} ({layer}) imports higher layers {sorted(upward)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_much_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 450


@pytest.mark.parametrize("path", sorted((PACKAGE / "method").glob("*.py")), ids=lambda p: p.name)
def test_method_code_opens_no_file_reads_no_environment_and_logs_nothing(path):
    tree = ast.parse(path.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"os", "logging", "structlog", "pathlib", "h5py", "json", "yaml", "sys"}
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"open", "print", "input"}


def test_the_environment_is_read_only_at_the_edges():
    readers = sorted(str(p.relative_to(PACKAGE)) for p in _modules() if "environ" in p.read_text())
    # The CLI and an array task's entry read it; cell.host only interprets what they pass.
    assert readers == ["cell/host.py", "cli.py", "cluster/task.py"]
