import pytest

from tests.model.tiny import TINY
from tsmoe.config import RunConfig, dump_run_config, load_run_config, parse_run_config, with_field
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


def test_a_density_layer_beyond_the_model_names_the_field():
    parse_run_config({"model": {"num_hidden_layers": 2}, "evaluation": {"density_layer": 2}})
    parse_run_config({"evaluation": {"density_layer": "final"}})
    with pytest.raises(ValueError, match=r"evaluation.density_layer 3: the model has 2 decoder layers"):
        parse_run_config({"model": {"num_hidden_layers": 2}, "evaluation": {"density_layer": 3}})
    with pytest.raises(ValueError, match=r"field evaluation.density_layer"):
        parse_run_config({"evaluation": {"density_layer": "first"}})


def test_with_field_sets_one_dotted_field_and_validates_it():
    run = parse_run_config({"evaluation": {"density_weight": 1.0}})
    changed = with_field(with_field(run, "evaluation.density_layer=0"), "evaluation.heads=[1, 8]")
    assert changed.evaluation.density_layer == 0 and changed.evaluation.heads == [1, 8]
    assert changed.evaluation.density_weight == 1.0 and run.evaluation.density_layer == "final"
    with pytest.raises(ValueError, match=r"field evaluation\.smoothing_window"):
        with_field(run, "evaluation.smoothing_window=0")
    with pytest.raises(ValueError, match=r"expected section\.field=value"):
        with_field(run, "evaluation.density_layer")
    with pytest.raises(ValueError, match="no section 'scoring'"):
        with_field(run, "scoring.heads=[1]")


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


# --- the training objective and what it lets the detector use ---------------------------------------------
def test_the_model_follows_the_objective_and_its_masks():
    run = parse_run_config({"training": {"loss": "both", "mask_ratio": 0.3, "mask_span": 4}})
    model = run.model
    assert (model.reconstruction_head, model.reconstruction_mask_ratio, model.reconstruction_mask_span) == (
        True,
        0.3,
        4,
    )
    # A sweep that turns the loss back to forecast on a dumped config gets the plain model, whatever the dump said.
    back = parse_run_config(run.model_dump(mode="json") | {"training": {"loss": "forecast"}})
    assert back.model.reconstruction_head is False
    assert not parse_run_config({}).model.reconstruction_head


def test_a_given_model_config_is_not_changed_in_place():
    model = TimeMoEConfig(**TINY)
    run = RunConfig(model=model, training={"loss": "masked_reconstruction"}, evaluation=_reconstruction_only())
    assert run.model.reconstruction_head and not model.reconstruction_head


def _reconstruction_only() -> dict:
    return {"forecast_weight": 0.0, "reconstruction_weight": 1.0}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"training": {"loss": "masked_reconstruction"}}, r"masked_reconstruction trains no forecast head"),
        (
            {
                "training": {"loss": "masked_reconstruction"},
                "evaluation": _reconstruction_only() | {"cross_channel_weight": 1.0},
            },
            r"evaluation\.cross_channel_weight to 0",
        ),
        (
            {"evaluation": _reconstruction_only()},
            r"training\.loss forecast trains no reconstruction path.*evaluation\.forecast_weight",
        ),
        ({"training": {"loss": "reconstruction"}}, r"field training\.loss"),
        ({"training": {"mask_ratio": 0.0}}, r"field training\.mask_ratio"),
        ({"training": {"mask_ratio": 1.0}}, r"field training\.mask_ratio"),
        ({"training": {"mask_span": 0}}, r"field training\.mask_span"),
    ],
    ids=["forecast-weight", "cross-channel-weight", "nothing-to-score", "loss", "ratio-zero", "ratio-one", "span"],
)
def test_objective_errors_name_the_fields(values, message):
    with pytest.raises(ValueError, match=message):
        parse_run_config(values)


def test_the_detector_leaves_out_a_reconstruction_weight_the_objective_cannot_use():
    # A sweep draws training.loss and evaluation.reconstruction_weight independently: forecast with a weight is a
    # valid run whose detector has no reconstruction component.
    forecast = parse_run_config({"evaluation": {"reconstruction_weight": 0.5}})
    assert forecast.evaluation.reconstruction_weight == 0.5
    assert forecast.detector_settings().reconstruction_weight == 0.0
    both = parse_run_config({"training": {"loss": "both"}, "evaluation": {"reconstruction_weight": 0.5}})
    assert both.detector_settings().reconstruction_weight == 0.5


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"model": {"num_hidden_layers": 2}, "evaluation": {"alternatives": [{}, {"density_layer": 3}]}},
            r"evaluation\.alternatives\[1\]\.density_layer 3: the model has 2 decoder layers",
        ),
        ({"evaluation": {"alternatives": [{"heads": [5]}]}}, r"evaluation\.alternatives\[0\]\.heads \[5\]"),
        (
            {
                "training": {"loss": "masked_reconstruction"},
                "evaluation": _reconstruction_only() | {"alternatives": [{"forecast_weight": 1.0}]},
            },
            r"set evaluation\.alternatives\[0\]\.forecast_weight",
        ),
        (
            {"evaluation": {"alternatives": [_reconstruction_only()]}},
            r"training\.loss forecast trains no reconstruction path.*evaluation\.alternatives\[0\]\.forecast_weight",
        ),
    ],
    ids=["layer", "heads", "masked-reconstruction", "forecast"],
)
def test_every_alternative_detector_must_fit_the_model_and_its_objective(values, message):
    with pytest.raises(ValueError, match=message):
        parse_run_config(values)


def test_the_alternatives_leave_out_a_reconstruction_weight_the_objective_cannot_use():
    run = parse_run_config({"evaluation": {"alternatives": [{"reconstruction_weight": 0.5, "density_weight": 1.0}]}})
    candidates = run.detector_settings().candidates()
    assert [candidate.reconstruction_weight for candidate in candidates] == [0.0, 0.0]
    assert candidates[1].density_weight == 1.0
