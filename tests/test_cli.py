"""The ``cityseg`` dispatcher: help, unknown commands, errors as one line with exit code 2."""

import subprocess
import sys

import pytest

from cityseg.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_help_opens_with_what_the_tool_does(capsys):
    assert main([]) == 0
    first = capsys.readouterr().out.split("\n\n")[1]
    assert first.startswith("Semantic segmentation of Cityscapes") and "``" not in first


def test_models_counts_once_then_reads_the_cache(tmp_path, monkeypatch, capsys):
    from cityseg.models import info_cache

    calls = []
    real = info_cache.model_info
    monkeypatch.setattr(info_cache, "model_info", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["models", "bisenetv2", "--json", str(tmp_path / "a.json")]) == 0
    first = capsys.readouterr().out
    assert main(["models", "bisenetv2", "--json", str(tmp_path / "b.json")]) == 0
    assert capsys.readouterr().out == first and len(calls) == 1
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    (tmp_path / "cityseg" / info_cache.CACHE_FILE).write_text("{not json")  # a damaged cache is counted again
    assert main(["models", "bisenetv2"]) == 0 and len(calls) == 2


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert f"cityseg {name}" in capsys.readouterr().out


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "no_such_root"
    proc = subprocess.run([sys.executable, "-m", "cityseg", "check", "--data", str(missing)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in proc.stderr
