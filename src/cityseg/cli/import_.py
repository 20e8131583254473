"""``cityseg import``: the authors' trained weights -> a cityseg checkpoint (predict, evaluate, export, fine-tune)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cityseg.cli.args import size_arg

    parser.add_argument("file", metavar="FILE", help="the official state_dict (.pth), e.g. espnet_p_2_q_8.pth")
    parser.add_argument("--model", required=True, metavar="NAME", help="the cityseg model the file holds (see docs/pretrained-models.md)")
    parser.add_argument("--out", required=True, metavar="CKPT", help="cityseg checkpoint to write")
    check = "a model option the weights must have, e.g. --set q=8 (repeatable; the tensor shapes decide the variant)"
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE", help=check)
    parser.add_argument("--size", type=size_arg, default=None, metavar="HxW", help="input size to record (default: the authors' evaluation size)")


def run(args: argparse.Namespace) -> int:
    from cityseg.checkpoint import save_checkpoint
    from cityseg.models.official import import_official
    from cityseg.train.config import parse_override

    options = dict(parse_override(text) for text in args.options)
    ckpt = import_official(args.file, args.model, options, input_size=args.size)
    save_checkpoint(args.out, ckpt)
    opts = ", ".join(f"{k}={v}" for k, v in ckpt.model_options.items())
    h, w = ckpt.input_size
    print(
        f"wrote {args.out}: {ckpt.model_name} ({opts}), {ckpt.label_mode}, input {h}x{w}, "
        f"{ckpt.channel_order}, resize {ckpt.interpolation}, mean {[round(v, 4) for v in ckpt.mean]}, std {[round(v, 4) for v in ckpt.std]}"
    )
    return 0
