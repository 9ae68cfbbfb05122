"""The console script as a user meets it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from selfevo.cli import main

SUBCOMMANDS = ("run", "config", "data", "score", "eval", "refine", "report", "demo")


def test_help_lists_subcommands():
    exe = shutil.which("selfevo")
    command = [exe] if exe else [sys.executable, "-m", "selfevo.cli"]
    out = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_run_refuses_an_unknown_data_set_before_starting_anything(tmp_path, capsys):
    code = main(["run", f"run.output_dir={tmp_path}", "data.prompt_pool=builtin:nope"])
    assert code == 2
    assert "unknown builtin data set 'builtin:nope'" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_run_checks_a_file_prompt_pool(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    code = main(["run", "demo", f"run.output_dir={tmp_path}", f"data.prompt_pool={pool}"])
    assert code == 1
    assert "duplicate id 'a'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["config", "show", "nope.yaml"], ["data", "check", "/no/such.jsonl"]]
)
def test_missing_files_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err
