"""The shape of the code in ``src/cityseg``: no function or method longer than 60 lines (decorators, docstring
and body counted, from the ``ast``), so each one reads on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cityseg"
MAX_LINES = 60


def long_functions(source: str, where: str = "<source>") -> list[str]:
    """``"where:line name (N lines)"`` for every function or method of ``source`` over ``MAX_LINES``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines = node.end_lineno - start + 1
            if lines > MAX_LINES:
                found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def _function(name: str, body_lines: int, decorated: bool = False, indent: str = "") -> str:
    head = [f"{indent}@staticmethod"] if decorated else []
    return "\n".join(head + [f"{indent}def {name}():"] + [f"{indent}    x = {i}" for i in range(body_lines)]) + "\n"


@pytest.mark.parametrize(
    "source, expected",
    [
        (_function("f", MAX_LINES - 1), []),  # def line + 59 body lines = 60
        (_function("f", MAX_LINES), ["<source>:1 f (61 lines)"]),
        ("class C:\n" + _function("m", MAX_LINES - 1, decorated=True, indent="    "), ["<source>:3 m (61 lines)"]),  # the decorator counts
        ("def outer():\n" + _function("inner", MAX_LINES, indent="    "), ["<source>:1 outer (62 lines)", "<source>:2 inner (61 lines)"]),
    ],
)
def test_the_counter_counts_what_it_should(source, expected):
    assert sorted(long_functions(source)) == sorted(expected)


def test_no_function_over_60_lines():
    offenders = [f for p in sorted(PACKAGE.rglob("*.py")) for f in long_functions(p.read_text(encoding="utf-8"), str(p.relative_to(PACKAGE)))]
    assert not offenders, "functions over 60 lines:\n" + "\n".join(offenders)
