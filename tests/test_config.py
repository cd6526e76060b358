import pytest

from tests.model.tiny import TINY
from tsmoe.config import RunConfig, dump_run_config, load_run_config
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE


def test_a_written_config_reads_back_equal(tmp_path):
    config = RunConfig.model_validate(
        {
            "model": {"hidden_size": 64, "num_attention_heads": 4},
            "data": {"path": str(tmp_path / "data"), "crop_schedule": "half_then_full"},
            "training": {"epochs": 2},
        }
    )
    dump_run_config(config, tmp_path / "run.yaml")
    assert load_run_config(tmp_path / "run.yaml") == config


def test_relative_data_path_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "run.yaml").write_text("data:\n  path: ../data/synthetic\n")
    assert load_run_config(tmp_path / "configs" / "run.yaml").data.path == (tmp_path / "data" / "synthetic")


def test_errors_name_the_file_and_every_bad_field(tmp_path):
    (tmp_path / "run.yaml").write_text("data:\n  batch_size: 0\ntraining:\n  epochs: many\nextra: 1\n")
    with pytest.raises(ValueError) as raised:
        load_run_config(tmp_path / "run.yaml")
    message = str(raised.value)
    assert message.startswith(str(tmp_path / "run.yaml"))
    for field in ("field data.batch_size", "field training.epochs", "field extra"):
        assert field in message


def test_evaluation_heads_must_be_model_horizons(tmp_path):
    (tmp_path / "run.yaml").write_text("evaluation:\n  heads: [1, 5]\n")
    with pytest.raises(ValueError, match=r"evaluation.heads \[5\]"):
        load_run_config(tmp_path / "run.yaml")


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.yaml"):
        load_run_config(tmp_path / "nothing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML"):
        load_run_config(tmp_path / "bad.yaml")


def test_a_fine_tuning_config_takes_the_model_shape_from_its_checkpoint(tmp_path):
    TimeMoE(TimeMoEConfig(**TINY)).save_pretrained(tmp_path / "pretrained")
    path = tmp_path / "finetune.yaml"
    path.write_text(
        "model: {activation_checkpointing: true}\ntraining: {finetune: {checkpoint: pretrained, mode: lora}}\n"
    )
    config = load_run_config(path)
    assert config.training.finetune.checkpoint == (tmp_path / "pretrained").resolve()
    assert config.model.hidden_size == TINY["hidden_size"] and config.model.activation_checkpointing

    path.write_text("training: {finetune: {checkpoint: missing, mode: lora}}\n")
    with pytest.raises(ValueError, match=r"finetune.yaml: field training.finetune.checkpoint: .*missing"):
        load_run_config(path)
