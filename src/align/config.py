"""The training configuration: one dataclass, read from CLI flags and an optional YAML/JSON file.

Every field has a default and a one-line help; a config file may set any field (and the
algorithm's hyperparameters under `hparams:`); unknown keys are errors that name the key.
Precedence: defaults < a named preset (`align.training.presets`) < config file < CLI flags.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.presets import PRESETS as DATASET_PRESETS
from .errors import ConfigError
from .protocols import PROTOCOLS
from .training.precision import PRECISIONS
from .training.presets import PRESETS as TRAINING_PRESETS
from .training.selection import SELECTION_METHODS


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved, resolved, as `config.json` in the run)."""

    data: str = ""  # DomainBed-layout root: ROOT/<domain>/<class>/<image>
    out: str = ""  # run directory
    masks: str | None = None  # optional masks folder with the same relative paths
    dataset: str | None = None  # preset to validate against: vlcs | terra_incognita
    domains: list[str] | None = None  # optional subset of the data's domains to use
    algorithm: str = "erm"
    protocol: str = "lodo"  # a name in align.protocols.PROTOCOLS
    test_domains: list[str] = field(default_factory=list)  # lodo: the held-out domain(s)
    train_domains: list[str] = field(default_factory=list)  # single_source: the one source
    steps: int = 5001  # DomainBed default
    seed: int = 0  # seeds the split, the data order, augmentation and the model init
    backbone: str = "resnet50"
    pretrained: str | None = "imagenet"  # "imagenet", a local weights file, or null
    freeze_bn: bool | None = None  # null: the backbone's default (True for ResNets)
    image_size: int = 224
    augment: bool = True  # DomainBed's training augmentation (crop, flip, colour jitter, grey)
    batch_size: int = 32  # per training domain (DomainBed)
    eval_every: int = 300  # evaluate and checkpoint every N steps (DomainBed: 300)
    eval_batch_size: int = 128
    holdout_fraction: float = 0.2  # per-domain `out` split (DomainBed)
    num_workers: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast type of training (training.precision)
    channels_last: bool = False  # classifier, masker and batches in channels-last memory format
    skip_bad_images: bool = False
    verify_images: bool = True  # decode every image before training to catch bad files
    # Named masks folders scored only at evaluation by the algorithm's eval terms, logged as
    # TERM@NAME (e.g. {cue: data/cues}: how much of the shortcut ALIGN's masker keeps).
    eval_masks: dict[str, str] = field(default_factory=dict)
    selection: str = "training_domain_validation"  # what checkpoints/best.pt holds (training.selection)
    preset: str | None = None  # the training preset applied (align.training.presets), recorded for the record
    tensorboard: bool = False  # also log every loss term and accuracy to RUN/tensorboard/ (extra `tensorboard`)
    hparams: dict[str, Any] = field(default_factory=dict)

    def evaluates_after(self, step: int) -> bool:
        """Whether the run evaluates (and checkpoints) after 0-based `step`: every
        `eval_every` steps and after the last."""
        return (step + 1) % self.eval_every == 0 or step + 1 == self.steps

    def validate(self) -> "TrainConfig":
        """Check values that do not need the data; raise a ConfigError (a ValueError) naming the
        key.

        Types first, strictly, from the field annotations: an integer field refuses 10.0 (YAML's
        `1e1`) and "ten", a boolean refuses "no", a list refuses a plain string (which would be
        read letter by letter), a float must be finite."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), _HINTS[f.name])
        if not self.data:
            raise ConfigError("config: 'data' (the dataset folder) is required")
        if not self.out:
            raise ConfigError("config: 'out' (the run directory) is required")
        data, out = (Path(v).expanduser().resolve() for v in (self.data, self.out))
        if out == data or data in out.parents:
            # The run would train once, then every later scan of `data` (its resumption
            # included) would read the run directory as a domain and refuse the dataset.
            raise ConfigError(f"config: 'out' {self.out} lies inside 'data' {self.data} (the "
                              "dataset root); choose a run directory outside the dataset")
        for key, registry in (("protocol", PROTOCOLS), ("selection", SELECTION_METHODS),
                              ("preset", TRAINING_PRESETS), ("dataset", DATASET_PRESETS),
                              ("precision", PRECISIONS)):
            value = getattr(self, key)
            if value is not None and value not in registry:
                raise ConfigError(f"config: {key} {value!r} is not one of: {', '.join(registry)}")
        for key in ("steps", "image_size", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config: {key!r} must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ConfigError(f"config: 'num_workers' must be >= 0, got {self.num_workers}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(
                f"config: 'holdout_fraction' must be in (0, 1), got {self.holdout_fraction}"
            )
        for name in self.eval_masks:
            if not str(name).isidentifier():
                raise ConfigError(f"config: 'eval_masks' names must be plain words, got {name!r}")
        PROTOCOLS.get(self.protocol).check_domains(self.test_domains, self.train_domains)
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("config: 'tensorboard: true' needs the tensorboard package: "
                              "pip install 'align[tensorboard]' (or set it to false)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join([_type_name(a) for a in args] + ["null"])
    if origin is list:
        return "a list of " + {str: "strings", int: "integers"}.get(args[0], str(args[0]))
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        hint, str(hint))


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value) and (
            args[1] is Any or all(_matches(v, args[1]) for v in value.values()))
    return True


def _check_type(name: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        raise ConfigError(f"config: {name!r} must be {_type_name(hint)}, got {value!r}")


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads `1e-5` and `1.0e30` as numbers, as YAML 1.2 and JSON
    do: PyYAML follows YAML 1.1, whose floats need a dot and a signed exponent, so `lr: 1e-5`
    would be the string '1e-5' and refused as "expects float, got '1e-5'"."""


_YamlLoader.add_implicit_resolver(  # copies SafeLoader's resolvers: yaml.safe_load is unchanged
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """YAML text -> Python values, safely; the one YAML reader of config files and of KEY=VALUE
    flags (`--set`, `--param`), so `1e-5` is a number everywhere."""
    return yaml.load(text, Loader=_YamlLoader)


def read_config_file(path: str | Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML or JSON mapping; unknown top-level keys are errors naming the key and file.
    `extra`: keys a caller reads besides the TrainConfig fields (a sweep file's `sweep:`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path} is not valid {path.suffix or 'YAML'}: {e}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    unknown = sorted(set(data) - FIELDS - set(extra))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(FIELDS | set(extra)))}"
        )
    return data


def _merge(values: dict[str, Any], new: dict[str, Any]) -> None:
    """`values` updated by `new` in place; `hparams` merge key by key."""
    for k, v in new.items():
        if k == "hparams" and isinstance(v, dict) and isinstance(values.get(k), dict):
            values[k] = {**values[k], **v}
        else:
            values[k] = v


def make_config(file: str | Path | None = None, *, preset: str | None = None,
                **overrides: Any) -> TrainConfig:
    """Defaults < preset < config file < explicit overrides. An override of None sets None
    (e.g. `pretrained=None`: no pre-trained weights); callers with optional flags (the CLI) pass
    only the flags that were given.

    The preset is `preset`, else the config file's `preset` key (so a run's config.json, which
    records its preset, resolves to the same configuration). Unknown preset: KeyError naming the
    known ones.
    """
    from_file: dict[str, Any] = read_config_file(file) if file else {}
    name = preset or from_file.get("preset")
    values: dict[str, Any] = {}
    if name:
        _merge(values, TRAINING_PRESETS.get(name).values())
        values["preset"] = name
    _merge(values, {k: v for k, v in from_file.items() if k != "preset"})
    for k, v in overrides.items():
        if k not in FIELDS:
            raise ConfigError(f"unknown config key {k!r}")
        _merge(values, {k: v})
    return TrainConfig(**values).validate()


def check_run(config: TrainConfig) -> int:
    """Every check of a run's configuration that needs neither its data nor a network: the
    config's values (`TrainConfig.validate`), the algorithm's hyperparameters (unknown keys,
    types, choices, bounds), enough images per domain for its batch (IRM: 2), masks for an
    algorithm that learns from them, and enough steps to pass its warm-up. Raises a ConfigError
    naming the key; returns the algorithm's `objective_start`. The trainer runs it first; a sweep
    runs it on every run of its grid before writing anything."""
    from .algorithms import ALGORITHMS  # the algorithms (and torch) only when a run is checked

    config.validate()
    cls = ALGORITHMS.get(config.algorithm)
    cls.resolve_hparams(config.hparams)
    if config.batch_size < cls.MIN_DOMAIN_BATCH:
        raise ConfigError(f"algorithm {config.algorithm!r} needs at least {cls.MIN_DOMAIN_BATCH} "
                          f"images per training domain in a batch, got 'batch_size' "
                          f"{config.batch_size}")
    if cls.needs_masks(config.hparams) and config.masks is None:
        raise ConfigError(f"algorithm {config.algorithm!r} needs masks: pass --masks DIR")
    start = cls.objective_start(config.hparams)
    if config.steps <= start:
        raise ConfigError(
            f"algorithm {config.algorithm!r} trains on its whole objective only from step "
            f"{start} (its warm-up hyperparameters), but the run has {config.steps} steps: no "
            f"checkpoint would hold it. Raise --steps above {start} or shorten the warm-up (for "
            "ALIGN: hparams warmup_steps and masker_warmup_steps)")
    return start
