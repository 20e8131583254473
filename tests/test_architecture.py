"""The layering of ``src/cityseg``, read from the source with ``ast``: imports flow one way, no module
imports another in a cycle, and no module reaches for another module's private (underscore) names.

Layers, lowest first (docs/architecture.md draws them): the foundation modules, then ``data`` and
``models``, then ``infer``, ``eval``, ``train``, then ``tools``, then ``cli``. A module may import its
own package and anything in a lower layer; ``data`` and ``models`` do not import each other. The
package face (``cityseg/__init__.py``) and ``__main__`` sit outside the layers: they only re-export.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cityseg"
FOUNDATION = ("errors", "labels", "io", "runtime", "checkpoint")
RANK = {**dict.fromkeys(FOUNDATION, 0), "data": 1, "models": 1, "infer": 2, "eval": 3, "train": 4, "tools": 5, "cli": 6}
OUTSIDE = ("cityseg", "cityseg.__main__")  # the package face and the entry point


def module_name(path: Path) -> str:
    parts = ["cityseg", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str:
    """The module an import of ``name`` loads: ``name`` itself, or its parent when ``name`` is an attribute."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every cityseg import, function-level ones included."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(resolve(a.name), "", node.lineno) for a in node.names if a.name.split(".")[0] == "cityseg"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "cityseg":
                continue
            for a in node.names:
                target = f"{base}.{a.name}"
                if target in MODULES:
                    found.append((target, "", node.lineno))
                else:
                    found.append((resolve(base), a.name, node.lineno))
    return found


def layer(module: str) -> str:
    return module.split(".")[1]


def test_every_module_is_in_a_layer():
    unknown = sorted(m for m in MODULES if m not in OUTSIDE and layer(m) not in RANK)
    assert not unknown, f"modules outside the layer table (add them to RANK and docs/architecture.md): {unknown}"


def test_imports_flow_one_way():
    wrong = []
    for module in MODULES:
        if module in OUTSIDE:
            continue
        for target, name, line in imports(module):
            if target in OUTSIDE:
                if target == "cityseg" and name in ("__version__", "CitysegError"):
                    continue  # defined in the face itself, not re-exported from above
                wrong.append(f"{module}:{line} imports {name or target} from the package face")
                continue
            a, b = layer(module), layer(target)
            if a == b or (a in FOUNDATION and b in FOUNDATION):
                continue
            if RANK[b] >= RANK[a]:
                wrong.append(f"{module}:{line} imports {target} ({b} is not below {a})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in imports(m) if t != m}) for m in MODULES if m not in OUTSIDE}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in graph.get(m, []):
            if state.get(t) == 1:
                cycles.append(" -> ".join([*stack[stack.index(t) :], t]))
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_no_private_names_across_modules():
    wrong = []
    for module, path in MODULES.items():
        aliases = {}
        for target, name, line in imports(module):
            if name.startswith("_") and not name.startswith("__") and target != module:
                wrong.append(f"{module}:{line} imports {target}.{name}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cityseg"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("cityseg") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "source, message", [("from cityseg.cli import main\n", "not below"), ("from cityseg.data.layout import _private\n", "imports cityseg.data.layout._private")]
)
def test_the_guard_catches_what_it_should(tmp_path, monkeypatch, source, message):
    fake = PACKAGE / "data" / "layout.py"
    monkeypatch.setitem(MODULES, "cityseg.data._probe", tmp_path / "probe.py")
    (tmp_path / "probe.py").write_text(source)
    assert fake.exists()
    check = test_imports_flow_one_way if message == "not below" else test_no_private_names_across_modules
    with pytest.raises(AssertionError, match=message):
        check()
