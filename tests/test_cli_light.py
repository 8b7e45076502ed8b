"""The ``sagan`` command answers --version and --help without importing torch, and its messages go
through logging (-q / -v). Which modules are imported is read from ``sys.modules`` in a child process;
no test here times anything."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from sagan.cli import build_parser, main
from sagan.commands import COMMANDS, command_module

# train and study list the presets (sagan.config); evaluate's module imports the metrics at its top.
HEAVY_HELP = {"train", "study", "evaluate"}

PROBE = """
import json, sys
from sagan.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "torchvision", "numpy", "matplotlib", "torch_fidelity", "huggingface_hub")
               if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def imported_by(*argv: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120, check=False)
    return json.loads(r.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--version"], ["--help"], [], ["-q", "--help"]]
                         + [[name, "--help"] for name in COMMANDS if name not in HEAVY_HELP])
def test_help_and_version_import_no_torch(argv):
    seen = imported_by(*argv)
    assert seen["heavy"] == [], (argv, seen)
    assert seen["code"] in (0, 2)  # no command: the help and exit 2


def test_the_help_lines_are_the_ones_the_commands_register():
    for name, (_, line) in COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        command_module(name).add_parser(sub)
        assert [(a.dest, a.help) for a in sub._choices_actions] == [(name, line)]


def test_running_a_command_builds_its_full_parser_only(capsys):
    sub = next(a for a in build_parser("export")._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    assert any(a.dest == "format" for a in sub.choices["export"]._actions)
    assert [a.dest for a in sub.choices["sample"]._actions] == []  # only its line in `sagan --help`
    assert main(["nosuchcommand"]) == 2
    assert "invalid choice: 'nosuchcommand'" in capsys.readouterr().err


def test_quiet_keeps_warnings_errors_and_results_verbose_is_accepted(tmp_path, capsys):
    assert main(["export", "--pretrained", "fmnist32", "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'a'}")
    for argv in (["-q", "export"], ["export", "-q"]):  # before or after the command
        assert main([*argv, "--pretrained", "fmnist32", "--out", str(tmp_path / argv[0])]) == 0
        assert capsys.readouterr().out == ""
    assert main(["-q", "sample", "--pretrained", "fmnist32", "-n", "2", "--out", str(tmp_path / "s")]) == 0
    assert capsys.readouterr() == ("", "")  # no progress bar either
    assert main(["-v", "export", "--pretrained", "fmnist32", "--out", str(tmp_path / "v")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["-q", "export", "--pretrained", "fmnist32", "--out", str(tmp_path / "a")]) == 2  # exists
    err = capsys.readouterr().err
    assert err.startswith("sagan export: error: --out") and err.count("\n") == 1
    assert main(["-q", "-v", "--version"]) == 2  # one or the other


def test_quiet_and_verbose_after_a_study_kind(tmp_path, capsys):
    """-q / -v are accepted after a command's own subcommand too (sagan study collect DIR -q)."""
    for argv in (["study", "collect", str(tmp_path), "-q"], ["study", "collect", str(tmp_path), "-v"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "unrecognized arguments" not in err
        assert err.startswith(f"sagan study: error: {tmp_path} is not a study folder") and err.count("\n") == 1
    out = tmp_path / "st"
    assert main(["study", "attention", "--list", "--arms", "none,attn16", "--steps", "10", "--seeds", "1",
                 "--out", str(out), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("sagan train ") for line in lines)  # the results stay
