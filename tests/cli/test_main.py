"""The `tsmoe` entry point: every command is registered, and user errors end in one line and exit 2."""

from __future__ import annotations

import pytest

from tsmoe.cli.main import main


@pytest.mark.parametrize("command", ["data", "model", "evaluate", "train", "sweep", "report", "export"])
def test_every_stage_has_its_command(command, capsys):
    with pytest.raises(SystemExit) as raised:
        main([command, "--help"])
    assert raised.value.code == 0 and f"usage: tsmoe {command}" in capsys.readouterr().out


def test_a_user_error_prints_one_line_naming_the_command_and_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("tsmoe report: error: ") and "not a sweep directory" in error
    assert error.count("\n") == 1


def test_an_unknown_command_is_an_argparse_error():
    with pytest.raises(SystemExit) as raised:
        main(["fly"])
    assert raised.value.code == 2
