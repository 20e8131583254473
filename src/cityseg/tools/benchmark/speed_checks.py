"""One-off ratio checks behind docs/benchmarks.md "Performance 2": torch.compile and BatchNorm folding.

``python -m cityseg.tools.benchmark.speed_checks compile MODEL H W fp32|bf16 [REPS]`` and
``python -m cityseg.tools.benchmark.speed_checks fold MODEL... [--size HxW]``. Both run one thread and time
the alternatives in interleaved rounds with ``time.process_time``, so a loaded machine shifts them alike;
the printed ratios are what the docs quote, the absolute times are not.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from cityseg.models.fold import fold_batchnorm
from cityseg.tools.benchmark.model_speed import build


def interleaved(fns: Sequence[Callable[[], object]], reps: int) -> list[float]:
    """Median process-time seconds of each function, timed in ``reps`` interleaved rounds after one warm-up."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, t in zip(fns, times):
            t0 = time.process_time()
            fn()
            t.append(time.process_time() - t0)
    return [statistics.median(t) for t in times]


def compile_check(name: str, size: tuple[int, int], bf16: bool, reps: int = 3) -> dict[str, object]:
    """Eager vs ``torch.compile`` (inductor, weights frozen) inference, channels_last, batch 1."""
    torch._inductor.config.freezing = True
    model = build(name, size).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, *size).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model)

    def run(m):
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return m(x)

    t0, w0 = time.process_time(), time.perf_counter()
    run(compiled)  # the first call compiles (its worker processes are not in process_time: wall is shown too)
    compile_cpu, compile_wall = time.process_time() - t0, time.perf_counter() - w0
    eager, comp = interleaved([lambda: run(model), lambda: run(compiled)], reps)
    gain = eager - comp
    return {
        "model": name,
        "size": f"{size[0]}x{size[1]}",
        "dtype": "bf16" if bf16 else "fp32",
        "compile_cpu_s": round(compile_cpu, 1),
        "compile_wall_s": round(compile_wall, 1),
        "eager_s": round(eager, 4),
        "compiled_s": round(comp, 4),
        "speedup": round(eager / comp, 3),
        "breakeven_images_wall": round(compile_wall / gain) if gain > 0 else None,
    }


def fold_check(name: str, size: tuple[int, int], reps: int = 7) -> list[str]:
    """Unfolded vs BN-folded eager inference, channels_last, fp32 and bf16."""
    model = build(name, size).eval()
    folded = fold_batchnorm(model, size)
    mods = [m.to(memory_format=torch.channels_last) for m in (model, folded)]
    x = torch.rand(1, 3, *size).contiguous(memory_format=torch.channels_last)
    out = []
    for bf16 in (False, True):

        def runner(m, bf16=bf16):
            def run():
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    m(x)

            return run

        a, b = interleaved([runner(m) for m in mods], reps)
        out.append(f"{name} {'bf16' if bf16 else 'fp32'}: unfolded {a * 1e3:.1f} ms, folded {b * 1e3:.1f} ms, {a / b:.2f}x")
    return out


def main(argv: Sequence[str]) -> None:
    torch.set_num_threads(1)
    if argv[:1] == ["compile"]:
        name, h, w, dtype = argv[1], int(argv[2]), int(argv[3]), argv[4]
        print(json.dumps(compile_check(name, (h, w), dtype == "bf16", int(argv[5]) if len(argv) > 5 else 3)))
    elif argv[:1] == ["fold"]:
        names = [a for a in argv[1:] if not a.startswith("--size")]
        size = next((tuple(int(v) for v in a.split("=", 1)[1].split("x")) for a in argv[1:] if a.startswith("--size=")), (256, 512))
        for n in names:
            print("\n".join(fold_check(n, size)), flush=True)
    else:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
