"""Device-clean code: no tensor is created on the default device when its inputs live elsewhere.

On a GPU, a tensor made without naming its device lands on the CPU and the next op that meets the GPU
inputs fails (or, for a mask, silently moves every step). This machine has no GPU, so the test turns the
situation around: the computation stays on the CPU and the *default* device becomes `meta`. A factory call
that forgets `device=` then makes a meta tensor, and a dispatch mode fails on the first op that creates or
touches one, naming that op. A real meta tensor never has a place in these computations, so every hit is a
tensor made on the wrong device.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import tsmoe
from tests.model.tiny import TINY
from tests.training.test_loop import synthetic_data, tiny_run
from tsmoe.data.store import open_dataset
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.evaluation.scoring import channel_scores, forecast_errors, training_error_statistics
from tsmoe.model.config import TimeMoEConfig
from tsmoe.model.timemoe import TimeMoE, _attention_mask
from tsmoe.training.trainer import Trainer


class WrongDeviceTensor(AssertionError):
    """A tensor was created on the default device instead of its inputs' device."""


class _FailOnMeta(TorchDispatchMode):
    """Fails on any op whose arguments or results include a meta tensor."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        tensors = [value for value in tree_flatten((args, kwargs, result))[0] if isinstance(value, torch.Tensor)]
        if any(tensor.device.type == "meta" for tensor in tensors):
            raise WrongDeviceTensor(
                f"{func} made or used a tensor on the default device instead of the inputs' one, at {_caller()}"
            )
        return result


def _caller() -> str:
    """The innermost frame of tsmoe's own code: where the wrong-device tensor came from."""
    frames = [
        frame
        for frame in traceback.extract_stack()
        if frame.filename.startswith(_WATCHED_CODE)
        and frame.name not in ("_caller", "__torch_dispatch__", "__torch_function__")
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno} {frames[-1].line}" if frames else "outside tsmoe"


# tsmoe's package, and this file for the guard's own test.
_WATCHED_CODE = (str(Path(tsmoe.__file__).parent) + os.sep, __file__)


class _TsmoeDefaultDeviceIsMeta(TorchFunctionMode):
    """Factory calls from tsmoe's own code that name no device make meta tensors.

    torch's library code (the DataLoader's seed, optimizer state) keeps its own defaults: what it does
    with them is torch's business, and a GPU run meets it the same way.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        caller = sys._getframe(1).f_code.co_filename
        if func in _device_constructors() and kwargs.get("device") is None and caller.startswith(_WATCHED_CODE):
            kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


@contextlib.contextmanager
def default_device_elsewhere():
    """Inside: tensors tsmoe creates without a device land on `meta`, and any op that meets one fails."""
    with _TsmoeDefaultDeviceIsMeta(), _FailOnMeta():
        yield


def tiny_model(**overrides) -> TimeMoE:
    torch.manual_seed(0)
    return TimeMoE(TimeMoEConfig(**{**TINY, **overrides}))


def test_the_guard_catches_a_tensor_made_without_its_device():
    inputs = torch.ones(3)
    with default_device_elsewhere(), pytest.raises(WrongDeviceTensor, match=r"aten\.ones"):
        inputs + torch.ones(3)  # torch.ones without device= is the bug this guard exists for
    with default_device_elsewhere():
        assert (inputs + torch.ones(3, device=inputs.device)).device == inputs.device
        assert _attention_mask(None, 3, 2, inputs.device).device == inputs.device


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("experts", ["grouped", "loop"])
def test_forward_loss_backward_and_padding_mask_stay_on_the_inputs_device(attention, experts):
    model = tiny_model(attention_implementation=attention, expert_implementation=experts)
    series = torch.randn(3, 24, 2)
    attention_mask = torch.ones(3, 24)
    attention_mask[-1, -5:] = 0
    with default_device_elsewhere():
        output = model(series, labels=series, loss_masks=attention_mask, attention_mask=attention_mask)
        output.loss.backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(series, labels=series).loss.backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_generate_with_the_key_value_cache_stays_on_the_inputs_device(attention):
    # Every step after the first decodes with start > 0 and no padding mask: the mask must follow the inputs.
    model = tiny_model(attention_implementation=attention).eval()
    context = torch.randn(2, 20)
    with default_device_elsewhere():
        forecast = model.generate(context, 13)
    assert forecast.shape == (2, 33) and torch.isfinite(forecast).all()


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_one_trainer_step_stays_on_the_trainers_device(tmp_path, precision):
    run = tiny_run(synthetic_data(tmp_path / "data", train=4, val=4, length=32), epochs=1, precision=precision)
    run.training.throughput_warmup_steps = 0
    trainer = Trainer(run, "cpu")
    before = [parameter.detach().clone() for parameter in trainer.module.parameters()]
    with default_device_elsewhere():
        metrics = trainer.train_epoch()
    assert metrics["step"] == 1 and np.isfinite(metrics["loss"])
    assert any(not torch.equal(old, new) for old, new in zip(before, trainer.module.parameters(), strict=True))


def test_scoring_stays_on_the_models_device(tmp_path):
    dataset = open_dataset(synthetic_data(tmp_path / "data", train=4, val=4, length=32))
    model = tiny_model().eval()
    segments = torch.randn(2, 3, 32)
    with default_device_elsewhere():
        errors = forecast_errors(model, segments, heads=[1, 4])
        statistics = training_error_statistics(
            model, dataset.split("train"), dataset.normalization, EvaluationConfig(statistics_segments=4, heads=[1, 4])
        )
        scores = channel_scores(
            model, dataset.split("val"), dataset.normalization, statistics, EvaluationConfig(heads=[1, 4])
        )
    assert errors.shape == (2, 3, 32) and torch.isfinite(errors[..., 1:]).all()
    assert np.isfinite(statistics.mean).all() and np.isfinite(scores[..., 1:]).all()
