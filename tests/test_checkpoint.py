"""Checkpoint files: atomic writes, safe loading (weights_only=True), clear one-line errors."""

import os
import pickle

import pytest
import torch

from cityseg.checkpoint import load_checkpoint, save_checkpoint
from cityseg.errors import CitysegError


def _ckpt(**extra):
    model = torch.nn.Conv2d(3, 34, 1)
    return {
        "model": model.state_dict(),
        "model_name": "toy",
        "label_mode": "labelIds",
        "num_classes": 34,
        "class_names": ["a"] * 34,
        "input_size": [64, 128],
        "epoch": 3,
        **extra,
    }


def test_round_trip_and_versions(tmp_path):
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, _ckpt(rng=torch.get_rng_state()))
    got = load_checkpoint(path)
    assert got["epoch"] == 3 and got["versions"]["torch"] == torch.__version__
    assert got["model"]["weight"].shape == (34, 3, 1, 1) and isinstance(got["versions"]["torch"], str)
    assert sorted(os.listdir(path.parent)) == ["last.pt"]  # no temp files left behind


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_payload_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({**_ckpt(), "payload": _Evil()}, path)  # torch.save pickles arbitrary objects
    with pytest.raises(CitysegError, match="refused to load"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    # a raw pickle (not a torch zip file) with the same payload
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CitysegError):
        load_checkpoint(raw)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


@pytest.mark.parametrize("cut", [0, 10, 1000, -200])
def test_truncated_or_empty_checkpoint(tmp_path, cut):
    good = tmp_path / "good.pt"
    save_checkpoint(good, _ckpt())
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CitysegError) as err:
        load_checkpoint(bad)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg


def test_not_a_checkpoint_and_missing(tmp_path):
    p = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, p)
    with pytest.raises(CitysegError, match="not a cityseg checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CitysegError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CitysegError, match="folder"):
        load_checkpoint(tmp_path)


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _ckpt(epoch=1))

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(CitysegError, match="last.pt: cannot write checkpoint: No space left on device"):
        save_checkpoint(path, _ckpt(epoch=2))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]
