"""Which model a run starts from and which of its parameters train.

From scratch, or from a local pretrained checkpoint in the reference format. Fine-tuning modes:

- full: every parameter trains;
- lora: peft low-rank adapters on the attention projections and the input embedding; everything else,
  experts included, is frozen. The exported model has the adapters merged, in the reference format;
- frozen_experts: the routed and shared experts are frozen, the rest trains;
- router_only: only the MoE routers (and nothing else) train.

With a reconstruction objective (`training.loss` masked_reconstruction or both) the mask embedding and the
reconstruction head are new to any reference checkpoint; they train in full and lora modes (under lora they
are small, 2 x hidden, and start from their init when the checkpoint has none). With masked_reconstruction
alone the forecast heads get no gradient, so they are frozen: DDP would otherwise wait for them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeGuard

import torch

from tsmoe.model.checkpoint import RECONSTRUCTION_PREFIXES, load_pretrained
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE
from tsmoe.training.config import FinetuneConfig

if TYPE_CHECKING:
    from peft import PeftModel

# Module-name suffixes peft wraps in lora mode: attention projections and the input embedding's two linears.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "emb_layer", "gate_layer"]
_EXPERT_PARTS = (".ffn_layer.experts.", ".ffn_layer.shared_expert.", ".ffn_layer.shared_expert_gate.")
_ROUTER_PART = ".ffn_layer.gate."


def build_model(model_config: TimeMoEConfig, finetune: FinetuneConfig, loss: str = "forecast") -> torch.nn.Module:
    """A fresh model, or the pretrained one with its fine-tuning mode applied; `loss` is training.loss."""
    if finetune.checkpoint is None:
        model = TimeMoE(model_config)
        module: torch.nn.Module = model
    else:
        # The run's model fields (from the checkpoint's config.json plus any the run overrides) build the model
        # the pretrained weights load into; a shape that does not match them fails with the names that differ.
        model = load_pretrained(finetune.checkpoint, **model_config.model_dump())
        module = apply_finetune_mode(model, finetune)
    if loss == "masked_reconstruction":
        model.lm_heads.requires_grad_(False)
    return module


def apply_finetune_mode(model: TimeMoE, finetune: FinetuneConfig) -> torch.nn.Module:
    """Freeze parameters (or add adapters) as the mode says; returns the module to train."""
    if finetune.mode == "lora":
        from peft import LoraConfig, get_peft_model

        adapters = LoraConfig(
            r=finetune.lora_rank,
            lora_alpha=finetune.lora_alpha,
            lora_dropout=finetune.lora_dropout,
            target_modules=LORA_TARGETS,
        )
        wrapped = get_peft_model(model, adapters)
        for name, parameter in model.named_parameters():
            if name.startswith(RECONSTRUCTION_PREFIXES):
                parameter.requires_grad_(True)  # new to the checkpoint: trained in full beside the adapters
        return wrapped
    for name, parameter in model.named_parameters():
        if finetune.mode == "frozen_experts":
            parameter.requires_grad_(not any(part in f".{name}" for part in _EXPERT_PARTS))
        elif finetune.mode == "router_only":
            parameter.requires_grad_(_ROUTER_PART in f".{name}")
    return model


def _is_peft_model(model: torch.nn.Module) -> TypeGuard[PeftModel]:
    # peft takes seconds to import, in every Ray worker; a model can only be a PeftModel once it is loaded.
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside the training wrappers (DDP and DeepSpeed's `module`, torch.compile's `_orig_mod`)."""
    for attribute in ("module", "_orig_mod"):
        while isinstance(inner := getattr(model, attribute, None), torch.nn.Module):
            model = inner
    return model


def _time_moe(model: torch.nn.Module) -> TimeMoE:
    if not isinstance(model, TimeMoE):
        raise TypeError(f"expected a TimeMoE inside the training wrappers, found {type(model).__name__}")
    return model


def base_model(model: torch.nn.Module) -> TimeMoE:
    """The TimeMoE inside a training wrapper (DDP, DeepSpeed, torch.compile, peft), adapters not merged."""
    model = _unwrapped(model)
    if _is_peft_model(model):
        model = model.get_base_model()
    return _time_moe(model)


def export_model(model: torch.nn.Module) -> TimeMoE:
    """A plain TimeMoE for saving in the reference format: LoRA adapters merged into a copy."""
    model = _unwrapped(model)
    if _is_peft_model(model):
        import copy

        return _time_moe(copy.deepcopy(model).merge_and_unload())
    return _time_moe(model)
