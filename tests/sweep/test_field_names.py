"""The run config's field names in a search space: unknown fields and sections."""

from tests.sweep.conftest import load_error
from tsmoe.sweep.field_names import closest_fields, with_fields


def test_an_unknown_field_is_named_with_the_closest_field(tmp_path, small_base):
    message = load_error(tmp_path, "parameters:\n  model.hidden: {type: fixed, value: 64}\n", small_base)
    assert "field model.hidden: unknown" in message and "did you mean" in message
    assert "model.hidden_size" in message.split("did you mean")[1]

    message = load_error(tmp_path, "parameters:\n  model.num_expert: {type: fixed, value: 4}\n", small_base)
    assert "field model.num_expert: unknown" in message and "did you mean model.num_experts" in message

    message = load_error(tmp_path, "parameters:\n  zzz: {type: fixed, value: 64}\n", small_base)
    assert "field zzz: unknown" in message and "did you mean" not in message


def test_a_whole_section_is_not_a_field(tmp_path, small_base):
    message = load_error(tmp_path, "parameters:\n  training.deepspeed: {type: fixed, value: {stage: 1}}\n", small_base)
    assert "field training.deepspeed: a section, not a field" in message and "training.deepspeed.stage" in message


def test_closest_fields_prefer_the_same_name_in_another_section():
    assert closest_fields("training.batch_size")[0] == "data.batch_size"
    assert "model.num_experts" in closest_fields("model.num_expert")


def test_setting_a_dotted_path_copies_only_the_mappings_on_the_way():
    values = {"model": {"hidden_size": 64, "horizon_lengths": [1, 8]}, "data": {"batch_size": 4}}
    changed = with_fields(values, {"model.hidden_size": 128})
    assert changed == {"model": {"hidden_size": 128, "horizon_lengths": [1, 8]}, "data": {"batch_size": 4}}
    assert values["model"]["hidden_size"] == 64  # the original is untouched
    assert changed["data"] is values["data"]  # sections not on the path are shared, not copied
