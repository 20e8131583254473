"""``cityseg train``: train a model with a shipped recipe (seed, standard) or a TOML file; torchrun-ready.

Run it alone, or the same command under ``torchrun --nproc_per_node=N`` (and multi-node torchrun):
``--batch-size`` is the GLOBAL batch, split evenly across the processes.
"""

from __future__ import annotations

import argparse

from cityseg.cli.args import add_data_argument, size_arg
from cityseg.errors import CitysegError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cityseg.train.config import recipe_names

    add_data_argument(parser)
    parser.add_argument("--model", metavar="NAME", help="registered model (`cityseg models`); default with --resume: the run's")
    parser.add_argument("--out", metavar="RUN_DIR", required=True, help="run folder: last.pt, best.pt, metrics.csv, curves.png, config.toml, environment.json")
    parser.add_argument(
        "--config",
        metavar="RECIPE",
        default=None,
        help=f"shipped recipe ({', '.join(recipe_names())}) or a TOML file (default: seed; with --resume the run's own config)",
    )
    parser.add_argument("--epochs", type=int, metavar="N", help="epochs to train (recipe key train.epochs)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="the GLOBAL batch, split across torchrun processes (train.batch_size)")
    parser.add_argument("--size", type=size_arg, metavar="HxW", help="training size, e.g. 128x256 (data.size)")
    parser.add_argument("--lr", type=float, help="learning rate (optim.lr)")
    parser.add_argument("--seed", type=int, help="data order, augmentation and initial weights are functions of it (train.seed)")
    parser.add_argument("--workers", type=int, metavar="N", help="DataLoader processes (data.workers)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any recipe key, e.g. --set optim.name=adamw --set 'loss=[{name=\"dice\"}]' (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt exactly (LR position, data order, RNG)")
    parser.add_argument("--max-minutes", type=float, metavar="N", help="stop resumably after N minutes (train.max_minutes)")
    parser.add_argument("--tensorboard", action="store_true", help="also log scalars to RUN_DIR/tensorboard")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


#: the flags that set one recipe key as they are (argparse dest -> dotted key)
FLAG_KEYS = {
    "model": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "seed": "train.seed",
    "workers": "data.workers",
    "max_minutes": "train.max_minutes",
}


def resolve_config(args: argparse.Namespace) -> dict:
    """Recipe (or the run's own config with --resume) + dedicated flags + --set overrides, validated."""
    from pathlib import Path

    from cityseg.train.config import DEFAULTS, apply_overrides, load_recipe, merge

    run_config = Path(args.out) / "config.toml"
    if args.resume and args.config is None and (Path(args.out) / "last.pt").is_file():
        from cityseg.checkpoint import load_checkpoint

        last = Path(args.out) / "last.pt"
        saved = load_checkpoint(last)["config"]
        if not saved:  # a model-only checkpoint (an export's, an import's) put in place of a run's
            raise CitysegError(f"{last}: holds no training config to resume with; pass --config RECIPE")
        cfg = merge(DEFAULTS, saved, f"{args.out}/last.pt config")
    elif args.resume and args.config is None and run_config.is_file():  # killed before its first checkpoint
        cfg, _ = load_recipe(run_config)
    else:
        cfg, _ = load_recipe(args.config or "seed")
    flags = {key: getattr(args, dest) for dest, key in FLAG_KEYS.items() if getattr(args, dest) is not None}
    if args.size is not None:
        flags["data.size"] = list(args.size)
    if args.tensorboard:
        flags["train.tensorboard"] = True
    cfg = apply_overrides(cfg, flags, source="command line")
    cfg = apply_overrides(cfg, args.overrides, source="--set")
    if not cfg["model"]["name"]:
        raise CitysegError("no model given: pass --model NAME (see `cityseg models`)")
    return cfg


def run(args: argparse.Namespace) -> int:
    from cityseg.data.layout import resolve_root
    from cityseg.models import check_model_name
    from cityseg.train.run import train

    cfg = resolve_config(args)
    check_model_name(cfg["model"]["name"])
    summary = train(cfg, resolve_root(args.data), args.out, resume=args.resume, progress=not args.quiet)
    if summary["stopped"] == "interrupted":
        return 130
    return 0
