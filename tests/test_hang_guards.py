"""Nothing waits forever: every wait on another process, in the library and in the tests, names a timeout,
so a hung child fails its caller instead of hanging it (and CI with it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")])
#: subprocess functions that wait for the child
SUBPROCESS_WAITS = ("run", "call", "check_call", "check_output")


def unguarded_waits(tree: ast.AST) -> list[int]:
    """Lines of calls that wait on a process without a timeout: ``subprocess.run`` & co., ``communicate``,
    a bare ``.wait()`` or ``.join()``, and ``mp.spawn`` that joins by itself."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func, keywords = node.func, {k.arg: k.value for k in node.keywords}
        if None in keywords or "timeout" in keywords:  # a timeout, or **kwargs that may carry one
            continue
        on_subprocess = isinstance(func.value, ast.Name) and func.value.id == "subprocess"
        joins_itself = not (isinstance(keywords.get("join"), ast.Constant) and keywords["join"].value is False)
        waits = (
            (on_subprocess and func.attr in SUBPROCESS_WAITS)
            or func.attr == "communicate"
            or (func.attr in ("wait", "join") and not node.args)
            or (func.attr == "spawn" and joins_itself)
        )
        if waits:
            lines.append(node.lineno)
    return lines


def test_every_process_wait_has_a_timeout():
    found = [f"{path.relative_to(ROOT)}:{line}" for path in SOURCES for line in unguarded_waits(ast.parse(path.read_text(encoding="utf-8")))]
    assert not found, f"waits without a timeout: {', '.join(found)}"


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("subprocess.run(cmd, capture_output=True)", True),
        ("subprocess.run(cmd, timeout=60)", False),
        ("subprocess.run(cmd, **kw)", False),
        ("proc.communicate()", True),
        ("proc.communicate(timeout=5)", False),
        ("child.join()", True),
        ("child.join(60)", False),
        ("', '.join(names)", False),
        ("mp.spawn(fn, nprocs=2, join=True)", True),
        ("mp.spawn(fn, nprocs=2, join=False)", False),
    ],
)
def test_the_guard_catches_what_it_should(source, flagged):
    assert bool(unguarded_waits(ast.parse(source))) is flagged


def test_distributed_init_has_a_timeout(monkeypatch):
    """torchrun's processes join with ``distributed.TIMEOUT``: a peer that never arrives is an error, not a hang."""
    import torch.distributed as dist

    from cityseg.train import distributed as D

    seen = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.update(kw))
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    info = D.init_distributed_mode(device="cpu")
    assert info.rank == 1 and info.world_size == 2 and seen["backend"] == "gloo"
    assert seen["timeout"] == D.TIMEOUT and D.TIMEOUT.total_seconds() > 0
