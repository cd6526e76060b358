"""Checkpoint directories in the reference Time-MoE format.

A directory holds `config.json` (the reference's keys) and the weights as `model.safetensors`,
a sharded `model.safetensors.index.json`, or `pytorch_model.bin`, under the reference's parameter
names. The one layout difference is the routed experts: the reference stores one module per expert
(`...ffn_layer.experts.K.gate_proj.weight`), tsmoe stacks them (`...ffn_layer.experts.gate_proj`,
[E, ...]); the conversion happens here and nowhere else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"

_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# Parameters of the masked-reconstruction path (only with reconstruction_head), which reference checkpoints lack.
RECONSTRUCTION_PREFIXES = ("mask_embedding", "reconstruction_head.")
_REFERENCE_EXPERT_KEY = re.compile(r"^(.*\.ffn_layer\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_STACKED_EXPERT_KEY = re.compile(r"^(.*\.ffn_layer\.experts)\.(gate_proj|up_proj|down_proj)$")


def to_reference_names(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split stacked expert tensors into the reference's one-entry-per-expert names.

    Works on anything keyed by parameter name: a state dict, or a dict of gradients.
    """
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        match = _STACKED_EXPERT_KEY.match(name)
        if match is None:
            converted[name] = tensor
            continue
        prefix, projection = match.groups()
        for expert, weight in enumerate(tensor.unbind(0)):
            converted[f"{prefix}.{expert}.{projection}.weight"] = weight.contiguous()
    return converted


def from_reference_names(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack the reference's per-expert tensors into tsmoe's [E, ...] parameters."""
    converted: dict[str, torch.Tensor] = {}
    per_expert: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        match = _REFERENCE_EXPERT_KEY.match(name)
        if match is None:
            converted[name] = tensor
            continue
        prefix, expert, projection = match.groups()
        per_expert.setdefault((prefix, projection), {})[int(expert)] = tensor
    for (prefix, projection), experts in per_expert.items():
        if sorted(experts) != list(range(len(experts))):
            raise ValueError(f"{prefix}.*.{projection}: expert indices {sorted(experts)} are not 0..{len(experts) - 1}")
        for index, tensor in experts.items():
            if tensor.shape != experts[0].shape:
                raise ValueError(
                    f"{prefix}.{index}.{projection}.weight: shape {tuple(tensor.shape)}, "
                    f"but expert 0 has {tuple(experts[0].shape)}"
                )
        converted[f"{prefix}.{projection}"] = torch.stack([experts[index] for index in range(len(experts))])
    return converted


def build_from_reference(
    config: Mapping[str, Any] | TimeMoEConfig, state_dict: Mapping[str, torch.Tensor], **overrides: Any
) -> TimeMoE:
    """A TimeMoE from a reference config dict and a state dict under reference names.

    `overrides` replace config fields that do not change the weights' shapes (for example
    attention_implementation or expert_implementation).
    """
    if not isinstance(config, TimeMoEConfig):
        config = TimeMoEConfig.from_reference_dict(dict(config))
    if overrides:
        config = TimeMoEConfig(**{**config.model_dump(), **overrides})
    model = TimeMoE(config)
    tensors = from_reference_names(state_dict)
    expected = model.state_dict()
    # A balancing bias (router_bias_update_rate > 0) is ours: reference checkpoints have none, so it starts at zero.
    for name in expected:
        if name.endswith(".expert_bias") and name not in tensors:
            tensors[name] = torch.zeros_like(expected[name])
        # The reconstruction path is ours too: fine-tuning a checkpoint without one (a reference checkpoint) with a
        # reconstruction loss starts its mask embedding and head from their fresh initial values.
        if name.startswith(RECONSTRUCTION_PREFIXES) and name not in tensors:
            tensors[name] = expected[name]
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            "checkpoint does not match the config: "
            f"missing {_short_list(missing)}, unexpected {_short_list(unexpected)}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{name}: shape {tuple(tensor.shape)} in checkpoint, {tuple(expected[name].shape)} from config"
            )
    model.load_state_dict(tensors)
    return model


def _short_list(names: list[str], limit: int = 5) -> str:
    """A short printable list of parameter names for error messages."""
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


def load_pretrained(path: str | Path, **overrides: Any) -> TimeMoE:
    """Load a checkpoint directory written by the reference or by `save_pretrained`."""
    directory = Path(path)
    return build_from_reference(load_config(directory), _read_weights(directory), **overrides)


def load_config(path: str | Path) -> TimeMoEConfig:
    """The validated config of a checkpoint directory; errors name the file."""
    config_path = Path(path) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no config.json in checkpoint directory")
    try:
        return TimeMoEConfig.from_reference_dict(json.loads(config_path.read_text()))
    except ValueError as error:  # also json.JSONDecodeError and pydantic's ValidationError
        raise ValueError(f"{config_path}: {error}") from error


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / SAFETENSORS_FILE).is_file():
        return load_file(directory / SAFETENSORS_FILE)
    if (directory / SAFETENSORS_INDEX_FILE).is_file():
        index = json.loads((directory / SAFETENSORS_INDEX_FILE).read_text())
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(load_file(directory / shard))
        return tensors
    if (directory / TORCH_FILE).is_file():
        return torch.load(directory / TORCH_FILE, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"{directory}: no weights found; expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX_FILE} or {TORCH_FILE}"
    )


def save_pretrained(model: TimeMoE, path: str | Path) -> None:
    """Write `config.json` and `model.safetensors` under the reference's names."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.detach().cpu().contiguous() for name, tensor in to_reference_names(model.state_dict()).items()
    }
    # Write to temporary names first so an interrupted save never leaves a half-written checkpoint.
    weights_tmp, config_tmp = directory / (SAFETENSORS_FILE + ".tmp"), directory / (CONFIG_FILE + ".tmp")
    save_file(tensors, weights_tmp, metadata={"format": "pt"})
    config_tmp.write_text(json.dumps(model.config.to_reference_dict(), indent=2) + "\n")
    weights_tmp.replace(directory / SAFETENSORS_FILE)
    config_tmp.replace(directory / CONFIG_FILE)
