"""One run, end to end: model, data, training and evaluation settings, typed and validated here.

Every part of tsmoe reads its settings from a `RunConfig`; a sweep changes fields of one, and an exported
config is one written back to YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tsmoe.data.config import DataConfig
from tsmoe.errors import describe_fields
from tsmoe.evaluation.config import EvaluationConfig
from tsmoe.model.config import TimeMoEConfig
from tsmoe.training.config import TrainingConfig


class SweepOrigin(BaseModel):
    """Where an exported config came from: the sweep trial, why it was chosen, its figures and resources.

    Training ignores it, except that `tsmoe train` uses the trial's worker count unless told otherwise.
    """

    model_config = ConfigDict(extra="forbid")

    sweep: str  # the sweep directory
    trial_id: str
    policy: str
    metrics: dict[str, float]
    workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class RunConfig(BaseModel):
    """Everything a training run needs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: TimeMoEConfig = Field(default_factory=TimeMoEConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    origin: SweepOrigin | None = None  # set in configs written by `tsmoe export`

    def _detectors(self) -> list[tuple[str, EvaluationConfig]]:
        """The evaluation section and each of its alternatives, with the field path an error should name."""
        candidates = self.evaluation.candidates()
        return [("evaluation", candidates[0])] + [
            (f"evaluation.alternatives[{index}]", candidate) for index, candidate in enumerate(candidates[1:])
        ]

    @model_validator(mode="after")
    def _every_detector_fits_the_model_and_its_objective(self) -> RunConfig:
        """The section and each alternative score with heads the model has, states of a layer it has, and
        components its objective trains. The candidates are built once: a sweep's space checks validate
        thousands of run configs."""
        model, loss = self.model, self.training.loss
        for where, detector in self._detectors():
            missing = sorted(set(detector.heads) - set(model.horizon_lengths))
            if missing:
                raise ValueError(f"{where}.heads {missing} are not among model.horizon_lengths {model.horizon_lengths}")
            if not detector.density_layer_fits(model.num_hidden_layers):
                raise ValueError(
                    f"{where}.density_layer {detector.density_layer}: the model has "
                    f"{model.num_hidden_layers} decoder layers (give 0 for the input embedding, 1 to "
                    "num_hidden_layers for a layer's output, or final)"
                )
            if loss == "masked_reconstruction" and detector.forecast_weight + detector.cross_channel_weight > 0:
                raise ValueError(
                    f"training.loss masked_reconstruction trains no forecast head: set {where}.forecast_weight and "
                    f"{where}.cross_channel_weight to 0 (score with {where}.reconstruction_weight)"
                )
            if (
                loss == "forecast"
                and detector.forecast_weight + detector.cross_channel_weight + (detector.density_weight) <= 0
            ):
                raise ValueError(
                    f"training.loss forecast trains no reconstruction path, so {where}.reconstruction_weight scores "
                    f"nothing: one of {where}.forecast_weight, cross_channel_weight and density_weight must be > 0"
                )
        return self

    @model_validator(mode="after")
    def _reconstruction_path_follows_the_objective(self) -> RunConfig:
        """The model's reconstruction path is set from training.loss, mask_ratio and mask_span (any value given
        for those model fields is replaced: a sweep that changes the loss must change the model with it)."""
        training = self.training
        derived = {
            "reconstruction_head": training.loss != "forecast",
            "reconstruction_mask_ratio": training.mask_ratio,
            "reconstruction_mask_span": training.mask_span,
        }
        if any(getattr(self.model, name) != value for name, value in derived.items()):
            # Assigning revalidates the run config once more, which then finds nothing to change.
            self.model = self.model.model_copy(update=derived)
        return self

    def detector_settings(self) -> EvaluationConfig:
        """The evaluation section as this run's model can apply it: with training.loss forecast the model has no
        reconstruction path, so reconstruction_weight is left out, of the alternatives too (a sweep draws it and the
        loss independently, and every combination it draws must be a valid run)."""
        evaluation = self.evaluation
        if self.training.loss != "forecast":
            return evaluation
        alternatives = [changes | {"reconstruction_weight": 0.0} for changes in evaluation.alternatives]
        return evaluation.model_copy(update={"reconstruction_weight": 0.0, "alternatives": alternatives})


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config; relative data paths are taken from the file's directory."""
    path = Path(path)
    values = read_yaml(path, "config file") or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of sections (model, data, training, evaluation)")
    values = values | (overrides or {})
    checkpoint = ((values.get("training") or {}).get("finetune") or {}).get("checkpoint")
    if checkpoint is not None:
        checkpoint = Path(checkpoint) if Path(checkpoint).is_absolute() else (path.parent / checkpoint).resolve()
        values["training"]["finetune"]["checkpoint"] = str(checkpoint)
        values["model"] = _pretrained_model_fields(checkpoint, values.get("model") or {}, path)
    config = parse_run_config(values, source=str(path))
    if not config.data.path.is_absolute():
        config.data.path = (path.parent / config.data.path).resolve()
    return config


def with_field(config: RunConfig, assignment: str) -> RunConfig:
    """A copy of `config` with one dotted field set from `section.field=value` (the value read as YAML),
    validated like a config file; errors name the field."""
    name, equals, text = assignment.partition("=")
    section, dot, field = name.partition(".")
    if not equals or not dot or not field:
        raise ValueError(f"{assignment!r}: expected section.field=value, e.g. evaluation.density_layer=0")
    values = config.model_dump()
    if section not in values or not isinstance(values[section], dict):
        raise ValueError(f"{assignment!r}: no section {section!r} (sections: model, data, training, evaluation)")
    values[section][field] = yaml.safe_load(text)
    return parse_run_config(values, source=assignment)


def read_yaml(path: Path, kind: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """The contents of a YAML file; errors name the file and say what `kind` of file was expected."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {kind}")
    try:
        return yaml.load(path.read_text(), Loader=loader)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None


def _pretrained_model_fields(checkpoint: Path, given: dict[str, Any], source: Path) -> dict[str, Any]:
    """A fine-tuned model's shape comes from its checkpoint; fields given in the config override it."""
    from tsmoe.model.checkpoint import load_config

    try:
        pretrained = load_config(checkpoint).model_dump()
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{source}: field training.finetune.checkpoint: {error}") from None
    return pretrained | given


def parse_run_config(values: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a mapping; errors name the source and every bad field by its dotted path."""
    try:
        return RunConfig.model_validate(values)
    except ValidationError as error:
        raise ValueError(f"{source}: {describe_fields(error)}") from None


def dump_detector(config: EvaluationConfig, path: str | Path) -> None:
    """Write one evaluation section (a detector validation chose) as YAML that `load_detector` reads back."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def load_detector(path: str | Path) -> EvaluationConfig:
    """Read an evaluation section written by `dump_detector`; errors name the file and the field."""
    path = Path(path)
    values = read_yaml(path, "detector file")
    try:
        return EvaluationConfig.model_validate(values)
    except ValidationError as error:
        raise ValueError(f"{path}: {describe_fields(error)}") from None


def dump_run_config(config: RunConfig, path: str | Path) -> None:
    """Write a config as YAML that `load_run_config` reads back to an equal config."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
