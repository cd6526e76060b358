"""`tsmoe model info`: published sizes and clear errors."""

from __future__ import annotations

import json

from tsmoe.cli.main import main
from tsmoe.model import TimeMoEConfig


def test_info_prints_published_sizes_of_the_50m_preset(capsys):
    assert main(["model", "info", "--preset", "TimeMoE-50M"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "TimeMoE-50M: 113.4M parameters, 49.7M active per token"


def test_info_reads_a_checkpoint_config(tmp_path, capsys):
    config = TimeMoEConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    (tmp_path / "config.json").write_text(json.dumps(config.to_reference_dict()))
    assert main(["model", "info", "--checkpoint", str(tmp_path), "--fields"]) == 0
    out = capsys.readouterr().out
    total, active = config.parameter_counts()
    assert f"{total / 1e6:.1f}M parameters, {active / 1e6:.1f}M active" in out
    assert "  hidden_size: 32" in out


def test_info_on_a_directory_without_config_names_the_missing_file(tmp_path, capsys):
    assert main(["model", "info", "--checkpoint", str(tmp_path)]) == 2
    assert f"{tmp_path / 'config.json'}: no config.json" in capsys.readouterr().err


def test_info_on_an_invalid_config_names_the_file_and_field(tmp_path, capsys):
    config = TimeMoEConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    (tmp_path / "config.json").write_text(json.dumps({**config.to_reference_dict(), "num_experts_per_tok": 9}))
    assert main(["model", "info", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "config.json") in err and "num_experts_per_tok (9)" in err
