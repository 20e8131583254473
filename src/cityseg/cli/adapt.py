"""``cityseg adapt --checkpoint CKPT --images DIR --out CKPT2``: AdaBN, the BatchNorm statistics of a model
re-estimated on unlabelled images of a new domain (docs/camvid.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cityseg.cli.args import size_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="the model to adapt")
    parser.add_argument(
        "--images", metavar="DIR", required=True, help="unlabelled target images: any .png/.jpg under DIR, or a CamVid / Cityscapes root (its --split images)"
    )
    parser.add_argument("--out", metavar="CKPT2", required=True, help="the adapted checkpoint (written atomically, only on success)")
    parser.add_argument("--split", default="train", help="the split of a dataset root to adapt to (default: train)")
    parser.add_argument("--size", type=size_arg, metavar="HxW", help="input size (default: the checkpoint's; on CamVid images the CamVid rule)")
    parser.add_argument("--batch", type=int, default=8, metavar="N", help="images per pass (default 8; pooled branches need 2 or more)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def camvid_root(folder: Path) -> Path | None:
    """The CamVid root ``folder`` is, or whose split folder it is; None otherwise."""
    from cityseg.data.layout import CAMVID_SPLITS, is_camvid

    if is_camvid(folder):
        return folder
    if folder.name in CAMVID_SPLITS and is_camvid(folder.parent):
        return folder.parent
    return None


def run(args: argparse.Namespace) -> int:
    from cityseg.errors import CitysegError
    from cityseg.infer.adapt import adapt_checkpoint

    if args.batch < 1:
        raise CitysegError(f"--batch {args.batch}: must be at least 1")
    size = args.size
    if size is None and camvid_root(Path(args.images)) is not None:
        from cityseg.infer.camvid import camvid_predictor

        size = camvid_predictor(args.checkpoint).input_size  # the size evaluation on CamVid runs at
    done = adapt_checkpoint(args.checkpoint, args.images, args.out, size=size, batch=args.batch, device=args.device, split=args.split)
    h, w = done["size"]
    print(f"adapted {args.checkpoint} to {done['images']} images of {done['folder']} at {h}x{w}: wrote {args.out}", file=sys.stderr)
    return 0
