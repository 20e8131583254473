"""``cityseg models``: list the registered models with trainable parameters, GFLOPs and a description."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from cityseg.commands import size_arg
from cityseg.errors import CitysegError

DEFAULT_SIZE = (128, 256)


def add_arguments(parser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to list (default: all)")
    parser.add_argument("--size", type=size_arg, default=DEFAULT_SIZE, metavar="HxW",
                        help="input size for the GFLOPs column (default: 128x256)")
    parser.add_argument("--num-classes", type=int, default=34, help="output classes (default: 34)")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the table as JSON")


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_info(name: str, size=DEFAULT_SIZE, num_classes: int = 34) -> dict:
    """Params and GFLOPs per image (FlopCounterMode, 1 multiply-add = 2 FLOPs) of one model.

    The model runs on the meta device (no memory, no compute) with its per-branch path, so the
    figures are the network's own arithmetic. A model that does not accept ``size`` (e.g.
    ``segception_base``, built for one size) is counted at the size it accepts; ``note`` says so.
    """
    from cityseg.models import build_model, describe, model_options, set_fused

    h, w = size
    rebuilt = False
    with torch.device("meta"):
        model = build_model(name, num_classes=num_classes)
        if not model.accepts(h, w) and "input_size" in model_options(name):
            try:  # a model tied to one input size (segception_base) is rebuilt for this one
                model = build_model(name, num_classes=num_classes, input_size=(h, w))
                rebuilt = True
            except CitysegError:
                pass
    set_fused(model, False)
    note = ""
    run_h, run_w = h, w
    if not model.accepts(h, w):
        run_h, run_w = model.valid_size(h, w)
        note = f"needs {model.size_rule()}; counted at {run_h}x{run_w}"
    elif rebuilt:
        note = f"built with input_size={h}x{w}"
    x = torch.empty(1, 3, run_h, run_w, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return {
        "name": name,
        "params": count_params(model),
        "gflops": counter.get_total_flops() / 1e9,
        "size": [run_h, run_w],
        "note": note,
        "description": describe(name),
    }


def run(args) -> int:
    from cityseg.io import atomic_write_json
    from cityseg.models import check_model_name, list_models

    if args.num_classes < 1:
        raise CitysegError(f"--num-classes must be positive; got {args.num_classes}")
    names = [check_model_name(n) for n in args.names] or list_models()
    rows = [model_info(n, tuple(args.size), args.num_classes) for n in names]
    h, w = args.size
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'params':>12}  {f'GFLOPs@{h}x{w}':>14}  description")
    for r in rows:
        desc = r["description"] + (f" [{r['note']}]" if r["note"] else "")
        print(f"{r['name']:<{width}}  {r['params']:>12,}  {r['gflops']:>14.2f}  {desc}")
    if args.json:
        atomic_write_json(args.json, {"input_size": [h, w], "num_classes": args.num_classes, "models": rows})
    return 0
