"""The house keeps its shape (docs/architecture.md), read from the imports of every module, module level and
inside functions: rooms import only the rooms before them, no module imports a private name of another,
no module is loose at the top, none is over 400 lines."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prodrec"
ROOMS = ["utils", "config", "data", "models", "losses", "retrieval", "train", "gallery", "detection", "paddle", "serving",
         "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path):
    """``(module imported, names imported from it)`` for every import statement in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [alias.name for alias in node.names]


def room(module: str):
    """The room a module name belongs to; None for prodrec itself, prodrec.__main__ and other packages."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "prodrec" and parts[1] in ROOMS else None


def test_every_module_lives_in_a_room():
    loose = [name for name, path in MODULES.items() if path.parent == PACKAGE and path.stem not in ("__init__", "__main__")]
    assert loose == []
    assert {room(name) for name in MODULES if room(name)} == set(ROOMS)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_room_imports_only_the_rooms_before_it(name):
    own = room(name)
    if own is None:
        return  # prodrec/__init__ and __main__ stand above the rooms
    later = [imported for imported, _ in imports(MODULES[name])
             if room(imported) and ROOMS.index(room(imported)) > ROOMS.index(own)]
    assert later == [], f"{name} ({own}) reaches up the flow into {later}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_names_cross_modules(name):
    private = [f"{module}.{item}" for module, items in imports(MODULES[name]) if module.startswith("prodrec")
               and module != name for item in items if item.startswith("_") and item != "__version__"]
    assert private == [], f"{name} imports private names: {private}"


def test_no_import_cycles():
    graph = {name: {imported for imported, _ in imports(path) if imported in MODULES and imported != name}
             for name, path in MODULES.items() if room(name)}
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for neighbour in graph.get(node, ()):
            if state.get(neighbour) == "open":
                cycles.append(trail[trail.index(neighbour):] + [neighbour])
            elif neighbour not in state:
                visit(neighbour, trail + [neighbour])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_test_files_have_unique_names():
    """pytest imports test files by base name (no packages under tests/): two of one name break collection."""
    names = [path.name for path in (PACKAGE.parent / "tests").rglob("test_*.py")]
    assert sorted({name for name in names if names.count(name) > 1}) == []
