"""Reference-format checkpoint directories: save/load round trips, weight layouts, the parity fixture, errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.testing import assert_close

from tests.model.tiny import TINY
from tsmoe.model import TimeMoEConfig
from tsmoe.model.checkpoint import build_from_reference, to_reference_names
from tsmoe.model.timemoe import TimeMoE


def tiny_model(seed: int = 0, **overrides) -> TimeMoE:
    torch.manual_seed(seed)
    return TimeMoE(TimeMoEConfig(**{**TINY, **overrides})).eval()


def series(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def assert_same_predictions(model: TimeMoE, loaded: TimeMoE) -> None:
    x = series(2, 24)
    with torch.no_grad():
        expected, actual = model(x), loaded(x)
    assert sorted(actual.predictions) == sorted(expected.predictions)
    for horizon, prediction in expected.predictions.items():
        assert torch.equal(actual.predictions[horizon], prediction)


def reference_tensors(model: TimeMoE) -> dict[str, torch.Tensor]:
    return {name: tensor.contiguous() for name, tensor in to_reference_names(model.state_dict()).items()}


def write_config(directory, model: TimeMoE) -> None:
    (directory / "config.json").write_text(json.dumps(model.config.to_reference_dict()))


@pytest.mark.parametrize("overrides", [dict(), dict(use_dense=True)], ids=["moe", "dense"])
def test_save_then_load_gives_bitwise_equal_predictions(tmp_path, overrides):
    model = tiny_model(**overrides)
    model.save_pretrained(tmp_path)
    loaded = TimeMoE.from_pretrained(tmp_path)
    # An unset num_key_value_heads is written resolved, as the reference's config does.
    assert loaded.config == model.config.model_copy(update=dict(num_key_value_heads=4))
    assert_same_predictions(model, loaded)


def test_saved_weights_use_the_reference_parameter_names(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as weights:
        keys = set(weights.keys())
        shape = tuple(weights.get_slice("model.layers.1.ffn_layer.experts.3.down_proj.weight").get_shape())
    expert_keys = {
        f"model.layers.{layer}.ffn_layer.experts.{expert}.{projection}.weight"
        for layer in range(2)
        for expert in range(4)
        for projection in ("gate_proj", "up_proj", "down_proj")
    }
    assert expert_keys <= keys
    assert not any(key.endswith(("experts.gate_proj", "experts.up_proj", "experts.down_proj")) for key in keys)
    assert {"model.embed_layer.emb_layer.weight", "model.norm.weight", "lm_heads.2.out_layer.weight"} <= keys
    assert "model.layers.0.self_attn.q_proj.bias" in keys
    assert shape == (32, 32)
    assert len(keys) == sum(1 for _ in reference_tensors(model))


def test_saved_config_holds_the_reference_fields(tmp_path, parity_fixture):
    tiny_model(router_init_std=1e-4).save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    assert values["model_type"] == "time_moe"
    assert values["architectures"] == ["TimeMoeForPrediction"]
    assert values["num_key_value_heads"] == 4
    assert values["horizon_lengths"] == [1, 4, 8]
    assert values["router_init_std"] == 1e-4
    reference_model_keys = {
        key for key in parity_fixture["config"] if key in TimeMoEConfig.model_fields or key == "model_type"
    }
    assert len(reference_model_keys) == 19
    assert reference_model_keys <= set(values)


def test_pytorch_model_bin_directory_loads(tmp_path):
    model = tiny_model()
    write_config(tmp_path, model)
    torch.save(to_reference_names(model.state_dict()), tmp_path / "pytorch_model.bin")
    assert_same_predictions(model, TimeMoE.from_pretrained(tmp_path))


def test_sharded_safetensors_directory_loads(tmp_path):
    model = tiny_model()
    write_config(tmp_path, model)
    tensors = reference_tensors(model)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        save_file({name: tensors[name] for name in shard_names}, tmp_path / shard)
    weight_map = {name: shard for shard, shard_names in shards.items() for name in shard_names}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_same_predictions(model, TimeMoE.from_pretrained(tmp_path))


def test_from_pretrained_overrides_replace_kernel_choices(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = TimeMoE.from_pretrained(tmp_path, attention_implementation="eager", expert_implementation="loop")
    assert (loaded.config.attention_implementation, loaded.config.expert_implementation) == ("eager", "loop")
    x = series(2, 24)
    with torch.no_grad():
        assert_close(loaded(x).predictions[8], model(x).predictions[8], rtol=1e-5, atol=1e-6)


def test_parity_fixture_written_as_a_reference_directory_reproduces_its_predictions(tmp_path, parity_fixture):
    (tmp_path / "config.json").write_text(json.dumps(parity_fixture["config"]))
    weights = {name: tensor.contiguous() for name, tensor in parity_fixture["state_dict"].items()}
    save_file(weights, tmp_path / "model.safetensors")
    model = TimeMoE.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = model(parity_fixture["input_ids"].float())
    expected = parity_fixture["fp32"]["predictions"]
    assert sorted(out.predictions) == sorted(expected) == [1, 8, 32, 64]
    for horizon, prediction in expected.items():
        error = ((out.predictions[horizon] - prediction).norm() / prediction.norm()).item()
        assert error < 1e-5, f"predictions[{horizon}]: relative error {error:.2e}"


def test_missing_config_raises_file_not_found_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'config.json'}"):
        TimeMoE.from_pretrained(tmp_path)


def test_missing_weights_raise_file_not_found_naming_the_expected_files(tmp_path):
    write_config(tmp_path, tiny_model())
    expected = r"model\.safetensors, model\.safetensors\.index\.json or pytorch_model\.bin"
    with pytest.raises(FileNotFoundError, match=expected):
        TimeMoE.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "missing", ["model.norm.weight", "lm_heads.1.out_layer.weight", "model.layers.1.self_attn.k_proj.bias"]
)
def test_state_dict_missing_a_key_raises_value_error_naming_it(missing):
    model = tiny_model()
    tensors = reference_tensors(model)
    del tensors[missing]
    with pytest.raises(ValueError, match=rf"missing \[{re.escape(missing)}\] \(1\)"):
        build_from_reference(model.config, tensors)


@pytest.mark.parametrize(
    "expert, message",
    [
        (1, r"model\.layers\.0\.ffn_layer\.experts\.\*\.up_proj: expert indices \[0, 2, 3\]"),
        # With the last expert gone the rest still stack, into too few experts.
        (3, r"model\.layers\.0\.ffn_layer\.experts\.up_proj: shape \(3, 32, 32\) in checkpoint, \(4, 32, 32\)"),
    ],
    ids=["middle", "last"],
)
def test_state_dict_missing_an_expert_raises_value_error_naming_its_projection(expert, message):
    model = tiny_model()
    tensors = reference_tensors(model)
    del tensors[f"model.layers.0.ffn_layer.experts.{expert}.up_proj.weight"]
    with pytest.raises(ValueError, match=message):
        build_from_reference(model.config, tensors)


def test_state_dict_with_an_unexpected_key_raises_value_error_naming_it():
    model = tiny_model()
    tensors = {**reference_tensors(model), "lm_heads.3.out_layer.weight": torch.zeros(16, 32)}
    with pytest.raises(ValueError, match=r"unexpected \[lm_heads\.3\.out_layer\.weight\] \(1\)"):
        build_from_reference(model.config, tensors)


def test_shape_mismatch_raises_value_error_naming_the_parameter(tmp_path):
    model = tiny_model()
    tensors = reference_tensors(model)
    tensors["model.norm.weight"] = torch.zeros(16)
    write_config(tmp_path, model)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.norm\.weight: shape \(16,\) in checkpoint, \(32,\) from config"):
        TimeMoE.from_pretrained(tmp_path)


def test_shape_mismatch_of_every_expert_raises_value_error_naming_the_projection():
    model = tiny_model()
    tensors = reference_tensors(model)
    for expert in range(4):
        tensors[f"model.layers.1.ffn_layer.experts.{expert}.gate_proj.weight"] = torch.zeros(16, 32)
    expected = r"model\.layers\.1\.ffn_layer\.experts\.gate_proj: shape \(4, 16, 32\) in checkpoint, \(4, 32, 32\)"
    with pytest.raises(ValueError, match=expected):
        build_from_reference(model.config, tensors)


def test_shape_mismatch_of_one_expert_raises_value_error_naming_it():
    model = tiny_model()
    tensors = reference_tensors(model)
    tensors["model.layers.1.ffn_layer.experts.2.gate_proj.weight"] = torch.zeros(16, 32)
    with pytest.raises(
        ValueError, match=r"model\.layers\.1\.ffn_layer\.experts\.2\.gate_proj\.weight: shape \(16, 32\)"
    ):
        build_from_reference(model.config, tensors)


def test_save_into_an_existing_directory_keeps_other_files_and_leaves_no_temporaries(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me\n")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "scores.json").write_text("{}")
    tiny_model(seed=1).save_pretrained(tmp_path)
    model = tiny_model(seed=2)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me\n"
    assert (tmp_path / "eval" / "scores.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "eval", "model.safetensors", "notes.txt"]
    assert_same_predictions(model, TimeMoE.from_pretrained(tmp_path))


def test_a_reference_checkpoint_loads_into_a_model_with_the_reconstruction_path(tmp_path):
    plain = tiny_model()
    plain.save_pretrained(tmp_path)
    extended = TimeMoE.from_pretrained(tmp_path, reconstruction_head=True)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(extended.state_dict()[name], tensor), name
    # The path the checkpoint lacks starts from its init: small, not zero.
    assert 0 < extended.mask_embedding.abs().max() < 0.2


def test_a_checkpoint_with_the_reconstruction_path_round_trips(tmp_path):
    torch.manual_seed(0)
    model = TimeMoE(TimeMoEConfig(**TINY, reconstruction_head=True, reconstruction_mask_span=4))
    model.save_pretrained(tmp_path)
    loaded = TimeMoE.from_pretrained(tmp_path)
    assert loaded.config.reconstruction_head and loaded.config.reconstruction_mask_span == 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
