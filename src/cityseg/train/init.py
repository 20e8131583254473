"""``train.init_from``: start a fresh run from the model weights of another run's checkpoint (fine-tuning).

Only the weights are taken: the optimizer, schedule, epoch and RNG states start fresh, as in any new run.
The file is read with ``load_checkpoint`` (``torch.load(weights_only=True)``), and every key of the model
must be in it with the same shape, so a checkpoint of another architecture, width or label mode is one
``CitysegError`` line naming the first mismatch instead of a half-initialised model.
"""

from __future__ import annotations

from torch import nn

from cityseg.checkpoint import load_checkpoint
from cityseg.errors import CitysegError


def init_from_checkpoint(model: nn.Module, path: str) -> None:
    """Copy the ``model`` weights of the checkpoint at ``path`` into ``model`` (strict keys and shapes)."""
    state = load_checkpoint(path)["model"]
    where = f"train.init_from = {path!r}"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise CitysegError(f"{where}: checkpoint lacks {len(missing)} of the model's weights, e.g. {missing[0]!r} (another architecture?)")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise CitysegError(f"{where}: checkpoint has weights the model lacks, e.g. {unexpected[0]!r} (another architecture?)")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CitysegError(f"{where}: shape mismatch at {k!r}: checkpoint {list(state[k].shape)}, model {list(v.shape)}")
    model.load_state_dict(state)
