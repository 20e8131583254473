"""``cityseg models``: list the registered models with trainable parameters, GFLOPs and a description.

The figures are counted once per model, size and class count and kept in the user's cache
(``models.info_cache``), so the command answers at once after its first run."""

from __future__ import annotations

from cityseg.cli.args import size_arg
from cityseg.errors import CitysegError

DEFAULT_SIZE = (128, 256)  # the seed models' training size


def add_arguments(parser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to list (default: all)")
    parser.add_argument("--size", type=size_arg, default=DEFAULT_SIZE, metavar="HxW", help="input size for the GFLOPs column (default: 128x256)")
    parser.add_argument("--num-classes", type=int, default=34, metavar="N", help="output classes (default: 34, the labelIds; 19 for trainIds)")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the table as JSON")


def run(args) -> int:
    from cityseg.io import atomic_write_json
    from cityseg.models import check_model_name, list_models
    from cityseg.models.info_cache import cached_model_info

    if args.num_classes < 1:
        raise CitysegError(f"--num-classes must be positive; got {args.num_classes}")
    names = [check_model_name(n) for n in args.names] or list_models()
    rows = cached_model_info(names, tuple(args.size), args.num_classes)
    h, w = args.size
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'params':>12}  {f'GFLOPs@{h}x{w}':>14}  description")
    for r in rows:
        desc = r["description"] + (f" [{r['note']}]" if r["note"] else "")
        print(f"{r['name']:<{width}}  {r['params']:>12,}  {r['gflops']:>14.2f}  {desc}")
    if args.json:
        atomic_write_json(args.json, {"input_size": [h, w], "num_classes": args.num_classes, "models": rows})
    return 0
