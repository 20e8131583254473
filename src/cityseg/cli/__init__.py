"""``cityseg`` console script: one subcommand per module in ``cityseg.cli``.

Each command module (``cityseg.cli.<command>``, or the name ``MODULES`` gives a Python keyword) defines ``add_arguments(parser)`` and ``run(args) -> int | None``. Modules are
imported lazily, so ``cityseg --help`` stays fast. A ``CitysegError`` (or an OS error such as a full
disk) becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cityseg import __version__
from cityseg.errors import CitysegError

#: name -> one-line help; the module is cityseg.cli.<name>
COMMANDS: dict[str, str] = {
    "synth": "generate the SynthCity dataset in the official Cityscapes layout",
    "check": "validate a dataset and print pair counts and class shares",
    "prepare": "decode a dataset once into a memory-mapped cache",
    "models": "list the registered models with parameters and GFLOPs",
    "train": "train a model with a recipe into a run folder (resumable; torchrun-ready)",
    "demo": "the main job: SynthCity -> train -> official evaluation -> figure and report",
    "evaluate": "score a checkpoint or a folder of labelId PNGs like the official script",
    "adapt": "AdaBN: re-estimate a model's BatchNorm statistics on unlabelled images of a new domain",
    "predict": "write labelId / colour / overlay predictions (test-server ready)",
    "figure": "draw the results figure: input / ground truth / prediction / error rows",
    "report": "write a run's report: one offline web page with scores, curves, classes, worst frames",
    "export": "export a checkpoint to ONNX",
    "import": "turn the authors' trained Cityscapes weights (ESPNet, ESPNetv2, DDRNet, PIDNet, BiSeNetV2, SegFormer) into a checkpoint",
    "benchmark": "measure training, inference and loading speed",
}


#: command -> module name where the command is a Python keyword
MODULES: dict[str, str] = {"import": "import_"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors also exit 2, on one line
        self.exit(2, f"{self.prog}: error: {message}\n")


#: what ``cityseg --help`` opens with: what the tool does, for someone who has never seen it
DESCRIPTION = (
    "Semantic segmentation of Cityscapes street scenes in PyTorch: train the seed's networks and modern "
    "real-time ones, score them with the official Cityscapes protocol, and look at the results. Runs on a "
    "fresh machine with no download: `cityseg demo` generates SynthCity, a synthetic dataset in the "
    "Cityscapes layout, trains for 10 minutes and writes a report."
)
EPILOG = (
    "start with `cityseg demo`; with real Cityscapes: cityseg check, cityseg train, cityseg evaluate, cityseg report. "
    "`cityseg COMMAND --help` lists a command's options."
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cityseg", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"cityseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_ in COMMANDS.items():
        sub.add_parser(name, help=help_, description=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help / version / error
        parser.print_help()
        return 0 if not argv else 2
    name = argv[0]
    sub = _Parser(prog=f"cityseg {name}", description=COMMANDS[name])
    try:
        module = importlib.import_module(f"cityseg.cli.{MODULES.get(name, name)}")
        module.add_arguments(sub)
        args = sub.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except CitysegError as e:
        print(f"cityseg {name}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable folder, full disk, ...: name the file, no traceback
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"cityseg {name}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cityseg {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
