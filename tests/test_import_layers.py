"""The import graph of adaptermath/ has no cycle and imports only downward through the layers.

The layers are written once, in docs/architecture.md ("## Layers": a ``### N. name`` heading per
layer, a ``- `path` — sentence`` line per module). Every import counts: at module level, inside
functions, under ``TYPE_CHECKING``, and each ``_LAZY`` entry of a lazy package façade.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "adaptermath"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
CLI_ENTRY = "cli/"  # the top-level cli/ folder, installed as adaptermath.cli


def read_layers(text: str) -> list[tuple[str, list[str]]]:
    """[(layer name, [entry path, ...]), ...] from the "## Layers" section, lowest layer first."""
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    layers: list[tuple[str, list[str]]] = []
    for line in section.splitlines():
        heading = re.match(r"### (\d+)\. (.+)$", line)
        if heading:
            assert int(heading.group(1)) == len(layers) + 1, f"layer headings out of order at {line!r}"
            layers.append((heading.group(2), []))
            continue
        entry = re.match(r"- `([^`]+)` — \S", line)
        if entry:
            assert layers, f"module entry before the first layer: {line!r}"
            layers[-1][1].append(entry.group(1))
    return layers


def module_paths() -> dict[str, str]:
    """Dotted module name -> path relative to adaptermath/ (``formats/kohya.py``, ``__init__.py``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        parts = ["adaptermath", *Path(relative).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = relative
    return out


def entry_for(relative: str, entries: list[str]) -> str | None:
    """The most specific entry naming ``relative``: itself, or the deepest folder (``io/``) holding it."""
    matches = [e for e in entries if e == relative or (e.endswith("/") and relative.startswith(e))]
    return max(matches, key=len) if matches else None


def imported_modules(name: str, path: Path, modules: dict[str, str]) -> list[tuple[str, int]]:
    """The adaptermath modules ``name`` imports, with line numbers: every import statement anywhere
    in the file, and the values of a package's ``_LAZY`` table (relative to the package)."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
            found += [(t, node.lineno) for t in (submodules or [target])]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif is_package and isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            assert isinstance(node.value, ast.Dict), f"{path}: _LAZY must be a dict literal"
            found += [(f"{name}.{value.value}", node.lineno) for value in node.value.values
                      if isinstance(value, ast.Constant)]
    return [(t, line) for t, line in found
            if t != name and (t in modules or t == "adaptermath.cli" or t.startswith("adaptermath.cli."))]


def module_level_imports(name: str, path: Path, modules: dict[str, str]) -> set[str]:
    """The adaptermath modules a file imports when it is loaded (statements outside functions and classes)."""
    top = ast.parse(path.read_text(encoding="utf-8"))
    eager = [n for n in top.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    eager += [n for n in top.body if isinstance(n, ast.If) and "TYPE_CHECKING" not in ast.unparse(n.test)
              for n in ast.walk(n) if isinstance(n, (ast.Import, ast.ImportFrom))]
    lines = {n.lineno for n in eager}
    return {t for t, line in imported_modules(name, path, modules) if line in lines}


def graph() -> tuple[dict[str, int], dict[str, list[tuple[str, int]]], list[tuple[str, list[str]]]]:
    layers = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    modules = module_paths()
    entries = [e for _, names in layers for e in names]
    layer_of_entry = {e: index for index, (_, names) in enumerate(layers) for e in names}
    layer = {}
    for name, relative in modules.items():
        entry = entry_for(relative, entries)
        assert entry is not None, f"adaptermath/{relative} is in no layer of docs/architecture.md; add a line for it"
        layer[name] = layer_of_entry[entry]
    assert CLI_ENTRY in layer_of_entry, f"docs/architecture.md: the layer list has no `{CLI_ENTRY}` entry"
    layer["adaptermath.cli"] = layer_of_entry[CLI_ENTRY]
    edges = {name: imported_modules(name, PACKAGE / relative, modules) for name, relative in modules.items()}
    return layer, edges, layers


def layer_of(name: str, layer: dict[str, int]) -> int:
    return layer["adaptermath.cli"] if name.startswith("adaptermath.cli") else layer[name]


def test_the_layer_list_names_every_module_once_and_nothing_else():
    layers = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert len(layers) >= 10, "docs/architecture.md: the layer list was not found"
    entries = [e for _, names in layers for e in names]
    assert len(entries) == len(set(entries)), "docs/architecture.md: an entry is listed twice"
    relatives = list(module_paths().values())
    for entry in entries:
        if entry == CLI_ENTRY:
            assert (ROOT / "cli").is_dir()
            continue
        covered = [r for r in relatives if entry_for(r, entries) == entry]
        assert covered, f"docs/architecture.md names `{entry}`, which is no module of adaptermath/ (or has entries for all of its modules)"


def test_imports_only_go_down_the_layers():
    layer, edges, layers = graph()
    upward = [
        f"{name} (layer {layers[layer[name]][0]}) imports {target} (layer {layers[layer_of(target, layer)][0]}) at line {line}"
        for name, targets in edges.items() for target, line in targets
        if layer_of(target, layer) > layer[name]
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_nothing_imports_the_package_root():
    _, edges, _ = graph()
    offenders = [f"{name} line {line}" for name, targets in edges.items() for target, line in targets
                 if target == "adaptermath"]
    assert not offenders, "import from the defining module, not from adaptermath itself: " + ", ".join(offenders)


def test_the_import_graph_has_no_cycle():
    _, edges, _ = graph()
    successors = {name: sorted({t for t, _ in targets if t in edges}) for name, targets in edges.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in successors[name]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(successors):
        if name not in state:
            cycle = visit(name)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_package_init_loads_nothing_above_its_lowest_module():
    """Importing any module of a package runs the package's ``__init__`` first, so that file may
    load (at module level) only what the package's lowest module could import itself."""
    layer, _, layers = graph()
    modules = module_paths()
    for name, relative in modules.items():
        if not relative.endswith("__init__.py"):
            continue
        children = [m for m in modules if m.startswith(name + ".")]
        if not children:
            continue
        lowest = min(layer[m] for m in children)
        above = [t for t in module_level_imports(name, PACKAGE / relative, modules) if layer_of(t, layer) > lowest]
        assert not above, (f"{name}/__init__.py loads {', '.join(sorted(above))} when any of its modules is imported, "
                           f"but its lowest module is in layer {layers[lowest][0]}; make it a lazy façade (facade.make_lazy)")


def test_the_checks_see_imports_inside_functions_and_lazy_tables():
    """The walker is not blind to the imports that caused the old cycles."""
    modules = module_paths()
    compose = dict(imported_modules("adaptermath.compose", PACKAGE / "compose.py", modules))
    assert "adaptermath.formats.peft_writer" in compose  # imported inside ComposedAdapter.save
    formats = dict(imported_modules("adaptermath.formats", PACKAGE / "formats" / "__init__.py", modules))
    assert "adaptermath.formats.convert" in formats  # a _LAZY entry
    root = dict(imported_modules("adaptermath", PACKAGE / "__init__.py", modules))
    assert "adaptermath.recipe.run" in root
