"""The evaluation config, and named presets that fix part of it to reproduce a published protocol.

    evaluate_run(run, EvalConfig(preset="dre_auc"))   ->  run/evaluation-dre_auc.json

`EvalSettings` holds what an evaluation explains and how it scores it; `EvalConfig` adds which
checkpoint, how many images, where, and under which name: everything `evaluate_run` depends on,
stored (resolved) as evaluation.json's `config`. Field defaults are those of the main
`evaluation.json`. A preset is a named `EvalSettings` with its source. With a preset the settings
it fixes cannot also be given: the file it writes then always means the protocol it names.

Presets:

- `dre_auc`: DRE's explanation "AUC" (Li et al., CVPR 2023; ALIGN's VOC2007 table most likely
  uses it), read from tangli-udel/DRE (commit 4ea0588) dre/explanations/fidelity/evaluate_auc.py
  and evaluation.py (RISE's CausalMetric). See docs/metrics.md, "DRE's insertion AUC".
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .registry import Registry
from .rundir import evaluation_files

__all__ = [
    "EXPLAIN_CLASSES", "EvalConfig", "EvalPreset", "EvalSettings", "PRESETS", "build_metrics",
    "json_metric_params", "resolve_settings",
]

#: Which class the explanation explains: the model's prediction, or the ground-truth label.
#: (The faithfulness metrics always track the prediction, whatever is explained.)
EXPLAIN_CLASSES = ("prediction", "label")


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation explains and scores (defaults: those of the main evaluation.json).

    Attributes:
        explainer: a name in `align.metrics.EXPLAINERS`.
        substrate: a name in `align.metrics.SUBSTRATES`, given to every faithfulness metric.
        metrics: names in `METRICS`; None = all (localisation ones only when the run has masks).
        explain_class: "prediction" or "label" (see `EXPLAIN_CLASSES`).
        metric_params: {metric name: {constructor keyword: value}}, e.g.
            {"insertion": {"n_steps": 28}}; None = every metric's defaults.
    """

    explainer: str = "gradcam"
    substrate: str = "blur"
    metrics: Sequence[str] | None = None
    explain_class: str = "prediction"
    metric_params: Mapping[str, Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.explain_class not in EXPLAIN_CLASSES:
            raise ValueError(
                f"explain_class must be one of {EXPLAIN_CLASSES}, got {self.explain_class!r}"
            )
        if self.metrics is not None:  # a tuple: the config is frozen and compared by value
            object.__setattr__(self, "metrics", tuple(self.metrics))


@dataclass(frozen=True)
class EvalConfig(EvalSettings):
    """Everything an evaluation depends on: the `EvalSettings` fields (what is explained and
    scored) and these.

    Attributes:
        checkpoint: "best" (chosen by the run's `selection`) or "last".
        max_batches: at most this many batches per split (None: the whole split).
        batch_size: images per batch (every metric runs on the whole batch at once).
        device: "cpu", "cuda", ...; None: the run's training device (config.json's `device`,
            the CPU when that is a GPU this machine lacks). May change when an evaluation
            resumes; stored resolved.
        data, masks: image / mask roots when they moved since training (default: config.json's,
            else dataset.json's resolved paths). Another mask root is another evaluation.
        name: write `evaluation-<name>.json` instead of `evaluation.json` (e.g. scores against
            another mask root, kept beside the main evaluation); default: the preset's name.
        preset: a name in `PRESETS` (e.g. "dre_auc"): fixes every `EvalSettings` field, which
            must then be left at its default.
        n_examples: example images saved for the report's figures (examples.npz), from the
            first evaluated split; 0 saves none.
    """

    checkpoint: str = "best"
    max_batches: int | None = None
    batch_size: int = 64
    device: str | None = None
    data: str | None = None
    masks: str | None = None
    name: str | None = None
    preset: str | None = None
    n_examples: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {self.checkpoint!r}")
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {self.max_batches}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.n_examples < 0:
            raise ValueError(f"n_examples must be >= 0, got {self.n_examples}")
        evaluation_files(self.name)  # a ValueError for a name that is not a plain file name
        for key in ("data", "masks"):  # paths as text: the config is stored as JSON
            if isinstance(getattr(self, key), os.PathLike):
                object.__setattr__(self, key, os.fspath(getattr(self, key)))

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON data (tuples as lists), as evaluation.json stores it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class EvalPreset:
    """A named protocol: its settings, one line on what it is, and where it comes from."""

    name: str
    settings: EvalSettings
    description: str
    source: str


PRESETS: Registry[EvalPreset] = Registry("evaluation preset")


def _register(preset: EvalPreset) -> None:
    PRESETS.register(preset.name)(preset)


# DRE's insertion AUC, each setting checked in its code (tangli-udel/DRE, commit 4ea0588):
# - explained class: the label. evaluate_auc.py::get_auc_per_data_subset calls
#   `cam(input_tensor=img, target_category=trg)` with `trg` the ImageFolder labels; `cam` is
#   pytorch-grad-cam's GradCAM at `layer4[-1]` (its <= 1.3.0 API: ReLU, then an OpenCV bilinear
#   resize to 224, then a per-image min-max): our "gradcam" explainer (ReLU, min-max, bilinear
#   upsampling with half-pixel centres, as OpenCV's) orders the pixels the same way, except
#   among ties (the ReLU's zeros), whose order DRE's numpy sort leaves unspecified and ours fixes
#   (row-major). Not Captum: Captum's LayerGradCam (no ReLU) is DRE's *training* loss
#   (dre/mixuploss.py).
# - tracked class: the clean image's argmax, fixed over the steps
#   (evaluation.py::CausalMetric.evaluate: `top = np.argmax(predictions, -1)` once, then
#   `preds[range(batch_size), top[...]]` at every step): the prediction, as in every evaluation.
# - substrate: `F.conv2d(x, gkern(11, 5), padding=klen // 2)`: "dre_blur".
# - steps: `CausalMetric(ddp_model, 'ins', 224 * 8, ...)`, HW = 224 * 224: 1,792 pixels per
#   step, 28 steps, 29 points. We keep 28 steps at any image size (step = HW / 28 pixels,
#   rounded): identical at 224 px, where DRE's code only runs.
# - AUC: evaluation.py::auc, `(arr.sum() - arr[0] / 2 - arr[-1] / 2) / (len(arr) - 1)`, the
#   trapezoid rule on the uniform grid i / 28: the `insertion` metric's torch.trapezoid.
_register(EvalPreset(
    name="dre_auc",
    settings=EvalSettings(
        explainer="gradcam", substrate="dre_blur", metrics=("insertion",),
        explain_class="label", metric_params={"insertion": {"n_steps": 28}},
    ),
    description="DRE's insertion AUC: the label's Grad-CAM, DRE's blur (gkern 11/5, zero "
                "padding), 28 steps (1,792 pixels at 224 px), p of the predicted class",
    source="tangli-udel/DRE dre/explanations/fidelity/evaluate_auc.py, evaluation.py (from RISE)",
))


def resolve_settings(preset: str | None, given: EvalSettings) -> EvalSettings:
    """The settings an evaluation runs with: `given`, or `given` with every `EvalSettings` field
    set to the preset's when one is named (an `EvalConfig` stays one).

    Raises:
        KeyError: an unknown preset (the message lists the choices).
        ValueError: a preset and a setting that differs from its default (the preset fixes it).
    """
    if preset is None:
        return given
    chosen = PRESETS.get(preset)
    changed = [f.name for f in dataclasses.fields(EvalSettings)
               if getattr(given, f.name) != f.default]
    if changed:
        raise ValueError(
            f"preset {preset!r} fixes {', '.join(changed)}; leave them out or drop the preset"
        )
    return dataclasses.replace(given, **{f.name: getattr(chosen.settings, f.name)
                                         for f in dataclasses.fields(EvalSettings)})


def json_metric_params(params) -> dict[str, dict[str, Any]]:
    """metric_params as plain JSON data (as the config stores and compares them)."""
    return json.loads(json.dumps({k: dict(v) for k, v in (params or {}).items()}))


def build_metrics(names: list[str], substrate: str, params: dict[str, dict[str, Any]]) -> dict:
    """{name: metric instance}: faithfulness metrics get `substrate`, then their own params.

    Raises:
        ValueError: params for a metric that is not evaluated, or that its constructor refuses.
    """
    from .metrics import METRICS

    unused = sorted(set(params) - set(names))
    if unused:
        raise ValueError(f"metric_params for metrics not evaluated: {', '.join(unused)}")
    out = {}
    for n in names:
        cls = METRICS.get(n)
        kw = {"substrate": substrate} if cls.category == "faithfulness" else {}
        kw.update(params.get(n, {}))
        try:
            out[n] = cls(**kw)
        except TypeError as e:
            raise ValueError(f"metric {n!r}: bad parameters {params.get(n)} ({e})") from None
    return out
