"""The fuzz corpus: damaged versions of a valid file, generated from it (never committed as binaries).

``fixed_corpus(seed)`` names a deterministic set of byte strings: text, random bytes, truncations at
many lengths, flipped bytes, an empty file, other formats' magic numbers at the start and a huge-header
or deeply nested variant. ``damaged(seed)`` is the hypothesis strategy over the same kinds of damage.
``odd_files(folder, seed, name)`` makes what a reader may meet instead of a file: a folder, a FIFO, a
broken symlink and a symlink loop, plus the valid file under a path that is not UTF-8.
``survives(reader, path)`` is the contract: the reader returns, or raises one ``CitysegError`` line
naming the file; it never blocks, never warns, and never raises anything else.
"""

from __future__ import annotations

import collections
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from cityseg.errors import CitysegError

#: other formats' first bytes, put in place of the real ones
MAGICS = (b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"\xff\xd8\xff\xe0", b"\x80\x02}q", b"\x08\x07\x12\x04", b"{", b"[train]\n", b"BM", b"GIF89a")
#: (reader, outcome) -> count over the whole session: the tally the report quotes
TALLY: collections.Counter = collections.Counter()


def png(width: int, height: int, depth: int = 8, color: int = 2, data: bytes = b"") -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height``, with ``data`` as its only IDAT."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def huge_header(seed: bytes) -> bytes:
    """A header that claims far more than any reader should allocate, in the seed's own format."""
    if seed.startswith(b"\x89PNG"):
        return png(40000, 40000)
    if seed.startswith(b"\xff\xd8"):  # JPEG: a baseline SOF0 of 65500 x 65500
        sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65500, 65500, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
        return b"\xff\xd8" + sof + b"\xff\xd9"
    if seed.startswith(b"PK"):  # zip: an end-of-central-directory record claiming 65535 entries of 4 GB
        return seed[:64] + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 65535, 65535, 0xFFFFFFFF, 0, 0)
    return b"[" * 100_000 + b"]" * 100_000  # text formats: nesting deeper than any recursive parser goes


def fixed_corpus(seed: bytes, n_cuts: int = 24, n_flips: int = 12) -> dict[str, bytes]:
    """Name -> bytes: the deterministic damage every reader is tried with."""
    rng = np.random.default_rng(len(seed))
    out = {
        "empty": b"",
        "text": b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
        "one line": b"hello\n",
        "random 1k": rng.integers(0, 256, 1024, dtype=np.uint8).tobytes(),
        "nul bytes": b"\x00" * 4096,
        "old pickle": b"\x80\x00",  # a pickle of protocol 0: torch warns of it before failing
        "huge header": huge_header(seed),
    }
    cuts = sorted({int(v) for v in np.linspace(1, len(seed) - 1, n_cuts)} | set(range(1, min(len(seed), 9))))
    out.update({f"cut {n}": seed[:n] for n in cuts})
    for i, pos in enumerate(np.linspace(0, len(seed) - 1, n_flips).astype(int)):
        data = bytearray(seed)
        data[pos] ^= 1 << (i % 8)
        out[f"flip {pos}"] = bytes(data)
    for magic in MAGICS:
        if not seed.startswith(magic):
            out[f"magic {magic[:4]!r}"] = magic + seed[len(magic) :]
    return out


def flip(seed: bytes, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(seed)
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    return bytes(data)


def damaged(seed: bytes) -> st.SearchStrategy[bytes]:
    """Hypothesis strategy: the seed truncated, with bytes flipped, spliced with another magic, or unrelated bytes."""
    n = len(seed)
    return st.one_of(
        st.integers(0, n - 1).map(lambda k: seed[:k]),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 255)), min_size=1, max_size=6).map(lambda f: flip(seed, f)),
        st.tuples(st.integers(0, n - 1), st.integers(1, 64)).map(lambda t: seed[: t[0]] + seed[t[0] + t[1] :]),
        st.tuples(st.sampled_from(MAGICS), st.integers(0, n)).map(lambda t: t[0] + seed[t[1] :]),
        st.binary(max_size=2048),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )


def odd_files(folder: Path, seed: bytes, name: str) -> dict[str, Path]:
    """What a reader may meet at ``name`` instead of a readable file (a folder, a FIFO, a broken symlink, a
    symlink loop), and the valid file in a folder whose name is not UTF-8; each in its own folder."""
    out = {kind: folder / kind / name for kind in ("folder", "fifo", "broken", "loop")}
    out["non-UTF-8 name"] = folder / os.fsdecode(b"name \xff\xfe") / name
    for path in out.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    out["folder"].mkdir()
    os.mkfifo(out["fifo"])
    out["broken"].symlink_to(folder / "nowhere")
    out["loop"].symlink_to(out["loop"])
    out["non-UTF-8 name"].write_bytes(seed)
    return out


def survives(name: str, reader, path: Path, accept: bool | None = None) -> str:
    """Run ``reader(path)`` under the contract; returns "read" or "refused" (and counts it in ``TALLY``).

    ``accept``: True when the file must be read, False when it must be refused, None when either is fine.
    A reader still blocked after a few seconds (on a FIFO) fails the test; the FIFO is then opened for
    writing so the blocked thread ends.
    """
    result: dict[str, BaseException | None] = {}

    def call():
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            try:
                reader(path)
                result["error"] = None
            except BaseException as e:  # the check below says which are allowed
                result["error"] = e
        result["warnings"] = [f"{w.category.__name__}: {w.message}" for w in shown]

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        with open(os.open(path, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
        raise AssertionError(f"{name}: reader blocked on {path}")
    error = result["error"]
    assert not result["warnings"], (name, path, result["warnings"])  # a warning is a second stderr line
    if error is not None and not isinstance(error, CitysegError):
        TALLY[(name, "leaked")] += 1
        raise AssertionError(f"{name}: {type(error).__name__} leaked from {path}: {error}") from error
    outcome = "read" if error is None else "refused"
    TALLY[(name, outcome)] += 1
    if error is not None:
        message = str(error)
        assert "\n" not in message and str(path) in message, (name, message)
    if accept is not None:
        assert (outcome == "read") == accept, (name, path, outcome, error)
    return outcome


# ---- the CLI batch: many `cityseg` calls in one process (one torch import) ---------------------------------
def run_batch(cases: list[dict]) -> list[dict]:
    """Run each ``{"argv": [...], "env": {...}}`` through ``cityseg.cli.main`` with fds 1 and 2 sent to
    files, as a separate ``cityseg`` process would print: an exception main lets through is printed as a
    traceback (exit 1). Each call sees every warning afresh (the once-per-location registries are cleared)."""
    import sys
    import tempfile
    import time
    import traceback

    from cityseg.cli import main

    results = []
    for case in cases:
        for module in list(sys.modules.values()):
            registry = getattr(module, "__warningregistry__", None)
            if isinstance(registry, dict):
                registry.clear()
        old_env = {k: os.environ.get(k) for k in case.get("env", {})}
        os.environ.update(case.get("env", {}))
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush(), sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
            start = time.perf_counter()
            try:
                rc = main(case["argv"])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
                rc = 1
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(saved[0], 1), os.dup2(saved[1], 2)
                os.close(saved[0]), os.close(saved[1])
            out.seek(0), err.seek(0)
            results.append(
                {
                    "seconds": time.perf_counter() - start,
                    "rc": rc,
                    "stdout": out.read().decode("utf-8", "replace"),
                    "stderr": err.read().decode("utf-8", "replace"),
                }
            )
        for k, v in old_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return results


if __name__ == "__main__":  # python tests/fuzzcorpus.py CASES.json RESULTS.json
    import json
    import sys

    Path(sys.argv[2]).write_text(json.dumps(run_batch(json.loads(Path(sys.argv[1]).read_text()))))
