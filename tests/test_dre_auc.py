"""DRE's insertion-AUC protocol: its blur kernel, its substrate, its insertion loop, its preset.

The references here are literal re-typings of DRE's public evaluation code (tangli-udel/DRE,
commit 4ea0588, dre/explanations/fidelity/evaluation.py and evaluate_auc.py, themselves RISE's
evaluation.py): numpy, an in-place pixel copy per step, one Python loop over the steps. The
project's versions are batched torch; these tests say the two agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from align.metrics import Insertion, make_substrate
from align.metrics.substrates import gkern

scipy_ndimage = pytest.importorskip("scipy.ndimage")  # scikit-image depends on scipy

HW = 224 * 224  # DRE's module constant: its loop only runs at 224 px
DRE_STEP = 224 * 8  # CausalMetric(ddp_model, 'ins', 224 * 8, substrate_fn=blur)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


# --------------------------------------------------------------------------- DRE, re-typed


def dre_gkern(klen, nsig):
    """evaluation.py::gkern, re-typed."""
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = scipy_ndimage.gaussian_filter(inp, nsig)
    kern = np.zeros((3, 3, klen, klen))
    kern[0, 0] = k
    kern[1, 1] = k
    kern[2, 2] = k
    return torch.from_numpy(kern.astype("float32"))


def dre_auc(arr):
    """evaluation.py::auc, re-typed."""
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def dre_insertion(model, img_batch, exp_batch, step=DRE_STEP):
    """CausalMetric(model, 'ins', step, blur).evaluate(img_batch, exp_batch, batch_size), re-typed
    for one batch (evaluate() splits into batches only to bound memory). `model` ends in a
    softmax, as evaluate_auc.py's nn.Sequential(net.module, nn.Softmax(dim=1)).

    Returns scores [n_steps + 1, n_samples], as DRE does.
    """
    klen, ksig = 11, 5
    kern = dre_gkern(klen, ksig)
    blur = lambda x: F.conv2d(x, kern, padding=klen // 2)  # noqa: E731 (DRE's own lambda)
    n_samples = img_batch.shape[0]
    with torch.no_grad():
        predictions = model(img_batch)
        top = np.argmax(predictions.numpy(), -1)  # the clean image's class, fixed for all steps
        n_steps = (HW + step - 1) // step
        scores = np.empty((n_steps + 1, n_samples))
        salient_order = np.flip(np.argsort(exp_batch.reshape(-1, HW), axis=1), axis=-1)
        r = np.arange(n_samples).reshape(n_samples, 1)
        substrate = blur(img_batch)
        start = substrate
        finish = img_batch.clone()
        for i in range(n_steps + 1):
            preds = model(start)
            preds = preds.numpy()[range(n_samples), top]
            scores[i, :] = preds
            coords = salient_order[:, step * i : step * (i + 1)]
            start.numpy().reshape(n_samples, 3, HW)[r, :, coords] = finish.numpy().reshape(
                n_samples, 3, HW
            )[r, :, coords]
    return scores


class DetailModel(nn.Module):
    """A hand-made classifier that tells sharp images from blurred ones.

    logits = [mean |laplacian(x)|, 1, mean(x)]: a clean noise image has much detail (class 0), its
    blurred copy almost none (class 1), so the class tracked from the clean image is not the
    argmax of the first insertion steps, and p_0 rises as pixels are inserted.
    """

    def __init__(self) -> None:
        super().__init__()
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("lap", lap.expand(3, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detail = F.conv2d(x, self.lap.to(x.dtype), padding=1, groups=3).abs().mean(dim=(1, 2, 3))
        return torch.stack([detail, torch.ones_like(detail), x.mean(dim=(1, 2, 3))], dim=1)


# --------------------------------------------------------------------------- kernel, substrate


@pytest.mark.parametrize("klen, nsig", [(11, 5), (11, 2.0), (7, 0.8), (5, 5), (1, 3)])
def test_gkern_equals_dre_gaussian_filter_of_a_delta(klen, nsig):
    ref = torch.from_numpy(dre_gkern(klen, nsig).numpy()[0, 0].astype(np.float64))
    ours = gkern(klen, nsig)
    torch.testing.assert_close(ours.float().double(), ref, rtol=0, atol=0)  # DRE keeps float32
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    exact = torch.from_numpy(scipy_ndimage.gaussian_filter(inp, nsig))
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-15)


def test_gkern_11_5_is_nearly_a_box():
    k = gkern(11, 5)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-15)
    # scipy folds a radius-20 Gaussian into 11 taps: almost flat (a plain 11-tap Gaussian with
    # sigma 5, torchvision's "blur", spans a factor 2.8 from corner to centre).
    assert float(k.max() / k.min()) == pytest.approx(1.14166, abs=1e-4)
    assert 0.93 / 121 < float(k.min()) and float(k.max()) < 1.07 / 121
    assert int(k.argmax()) == 5 * 11 + 5


def test_dre_blur_is_dre_conv2d_with_zero_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 20, 24)
    kern = dre_gkern(11, 5)
    torch.testing.assert_close(
        make_substrate(x, "dre_blur"), F.conv2d(x, kern, padding=5), rtol=0, atol=1e-6
    )
    # Zero padding: a constant image darkens towards its border (a corner keeps the mass of one
    # 6x6 quadrant of the kernel, 30%); reflect padding ("blur") keeps it constant.
    ones = torch.ones(1, 3, 16, 16)
    dre, reflect = make_substrate(ones, "dre_blur"), make_substrate(ones, "blur")
    torch.testing.assert_close(reflect, ones)
    corner = float(gkern(11, 5)[5:, 5:].sum())
    assert corner == pytest.approx(0.2992, abs=1e-4)
    assert float(dre[0, 0, 0, 0]) == pytest.approx(corner, abs=1e-6)
    assert float(dre[0, 0, 8, 0]) == pytest.approx(float(gkern(11, 5)[:, 5:].sum()), abs=1e-6)
    # Away from the border (>= 5 pixels in) the whole kernel is inside: the constant is kept.
    torch.testing.assert_close(dre[..., 5:11, 5:11], ones[..., 5:11, 5:11])
    # Inside an image the two blurs still differ: DRE's kernel is flatter.
    assert not torch.allclose(make_substrate(x, "dre_blur"), TF.gaussian_blur(x, [11, 11], [5.0, 5.0]))


# --------------------------------------------------------------------------- insertion loop


def test_insertion_28_steps_on_dre_blur_equals_dre_insertion_loop():
    """At 224 px, Insertion(substrate="dre_blur", n_steps=28) is DRE's loop: 1,792 pixels per step,
    29 points, the clean image's argmax tracked, DRE's AUC formula."""
    model = DetailModel().eval()
    torch.manual_seed(1)
    x = torch.randn(3, 3, 224, 224)
    x[1] = TF.gaussian_blur(x[1], [5, 5], [1.0, 1.0])  # too smooth to be class 0
    s = torch.rand(3, 1, 224, 224, dtype=torch.float64)  # full-resolution, no ties
    assert all(s[i].unique().numel() == HW for i in range(3))

    ours = Insertion(substrate="dre_blur", n_steps=28, max_batch=64)(model=model, x=x, saliency=s)
    ref = dre_insertion(nn.Sequential(model, nn.Softmax(dim=1)), x.clone(), s.numpy())

    assert ours.curves.shape == (3, 29) and ref.shape == (29, 3)
    # The tracked class is the clean image's argmax, not the substrate's (always class 1), nor
    # that of any step in between.
    with torch.no_grad():
        assert model(x).argmax(1).tolist() == [0, 1, 0]
        assert model(make_substrate(x, "dre_blur")).argmax(1).tolist() == [1, 1, 1]
    torch.testing.assert_close(ours.curves.double(), torch.from_numpy(ref.T), rtol=0, atol=1e-6)
    per_image = [dre_auc(ref[:, b]) for b in range(3)]
    torch.testing.assert_close(ours.values.double(), torch.tensor(per_image, dtype=torch.float64),
                               rtol=0, atol=1e-6)
    # DRE reports auc(h.mean(1)): the AUC of the mean curve, which is the mean of the AUCs.
    assert float(ours.values.double().mean()) == pytest.approx(dre_auc(ref.mean(1)), abs=1e-6)
    assert ours.fractions == [i / 28 for i in range(29)]
    assert float(ours.curves[0, 0]) < 0.5 < float(ours.curves[0, -1])  # the curve does rise


# --------------------------------------------------------------------------- the preset, end to end


@pytest.fixture(scope="module")
def erm_run(tiny_synth, tmp_path_factory):
    """A tiny trained ERM run (lodo, texture held out), without any evaluation file."""
    from align.training.loop import Trainer
    from conftest import tiny_config

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("dre_auc") / "erm"
    Trainer(tiny_config(tiny_synth, out, hparams={"lr": 1e-3})).run()
    return out


def _spy(monkeypatch):
    """Record every batch's labels (from the loader) and the class explain() was asked for."""
    import align.evaluation_scores
    import align.metrics

    seen = {"y": [], "explained": [], "x": []}
    real_score, real_explain = align.evaluation_scores._score_batch, align.metrics.explain

    def score(run, raw, config, metrics):
        seen["y"].append(raw["y"].clone())
        seen["x"].append(raw["x"].clone())
        return real_score(run, raw, config, metrics)

    def explain(name, model, x, target=None, **kw):
        seen["explained"].append(target.detach().cpu().clone())
        return real_explain(name, model, x, target=target, **kw)

    monkeypatch.setattr(align.evaluation_scores, "_score_batch", score)
    monkeypatch.setattr(align.metrics, "explain", explain)  # evaluate imports it per batch
    return seen


def test_dre_auc_preset_explains_the_label_and_scores_dre_insertion(erm_run, monkeypatch):
    from align.api import load_run
    from align.evaluate import EvalConfig, evaluate_run
    from align.metrics import explain

    seen = _spy(monkeypatch)
    ev = evaluate_run(erm_run, EvalConfig(preset="dre_auc", batch_size=64))
    assert (erm_run / "evaluation-dre_auc.json").is_file()
    assert not (erm_run / "evaluation.json").exists()  # the main evaluation is not touched
    cfg = ev["config"]
    assert cfg["preset"] == "dre_auc" and cfg["explain_class"] == "label"
    assert (cfg["explainer"], cfg["substrate"], cfg["metrics"]) == ("gradcam", "dre_blur", ["insertion"])
    assert cfg["metric_params"] == {"insertion": {"n_steps": 28}}

    # The explained class is the label of every image, misclassified ones included.
    model = load_run(erm_run).algorithm.classifier
    x, y = torch.cat(seen["x"]), torch.cat(seen["y"])
    torch.testing.assert_close(torch.cat(seen["explained"]), y)
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert bool((pred != y).any())  # else label and prediction could not be told apart

    # Each split's score is the insertion metric with DRE's settings on the label's CAM, tracking
    # the prediction (one batch per split here: batch_size covers every split).
    splits = list(ev["splits"].values())
    assert [s["n"] for s in splits] == [len(b) for b in seen["y"]]
    for s, xb, yb in zip(splits, seen["x"], seen["y"]):
        assert list(s["metrics"]) == ["insertion"]
        assert s["curves"]["insertion"]["fractions"] == [i / 28 for i in range(29)]
        sal = explain("gradcam", model, xb, target=yb)
        with torch.no_grad():
            pb = model(xb).argmax(1)
        ref = Insertion(substrate="dre_blur", n_steps=28)(model=model, x=xb, saliency=sal, target=pb)
        assert s["metrics"]["insertion"]["mean"] == pytest.approx(float(ref.values.mean()), abs=1e-6)
        # The prediction's CAM would give another score: the preset is not the default explainer.
        other = Insertion(substrate="dre_blur", n_steps=28)(
            model=model, x=xb, saliency=explain("gradcam", model, xb, target=pb), target=pb)
        if bool((pb != yb).any()):
            assert float(other.values.mean()) != pytest.approx(float(ref.values.mean()), abs=1e-9)


def test_default_evaluation_still_explains_the_prediction(erm_run, tmp_path, monkeypatch):
    import shutil

    from align.evaluate import EvalConfig, evaluate_run

    run = tmp_path / "erm"
    shutil.copytree(erm_run, run)
    seen = _spy(monkeypatch)
    cfg = EvalConfig(metrics=["insertion"], batch_size=64, max_batches=1)
    ev = evaluate_run(run, cfg)
    assert ev["config"]["explain_class"] == "prediction" and ev["config"]["preset"] is None
    assert ev["splits"][next(iter(ev["splits"]))]["curves"]["insertion"]["fractions"][1] == 1 / 20
    from align.api import load_run

    model = load_run(run).algorithm.classifier
    with torch.no_grad():
        pred = model(torch.cat(seen["x"])).argmax(1)
    torch.testing.assert_close(torch.cat(seen["explained"]), pred)
    # An evaluation file written before these settings existed (no such keys) is still reused.
    path = run / "evaluation.json"
    old = json.loads(path.read_text())
    for key in ("explain_class", "metric_params", "preset"):
        del old["config"][key]
    path.write_text(json.dumps(old))
    n = len(seen["explained"])
    assert evaluate_run(run, cfg) == old
    assert len(seen["explained"]) == n  # nothing recomputed


def test_preset_settings_cannot_be_overridden(erm_run):
    from align.evaluate import EvalConfig, evaluate_run
    from align.evaluation_presets import EvalSettings, resolve_settings

    with pytest.raises(ValueError, match="fixes substrate, metrics"):
        evaluate_run(erm_run, EvalConfig(preset="dre_auc", substrate="mean", metrics=["insertion"]))
    with pytest.raises(ValueError, match="fixes substrate"):
        resolve_settings("dre_auc", EvalSettings(substrate="mean"))
    with pytest.raises(KeyError, match="dre_auc"):
        resolve_settings("dre", EvalSettings())
    assert resolve_settings(None, EvalSettings(substrate="mean")).substrate == "mean"
    with pytest.raises(ValueError, match="explain_class"):
        EvalSettings(explain_class="target")
    with pytest.raises(ValueError, match="not evaluated: deletion"):
        evaluate_run(erm_run, EvalConfig(metrics=["insertion"],
                                         metric_params={"deletion": {"n_steps": 2}}))
    with pytest.raises(ValueError, match="bad parameters"):
        evaluate_run(erm_run, EvalConfig(metrics=["insertion"],
                                         metric_params={"insertion": {"steps": 2}}))
    assert not (erm_run / "evaluation.json").exists() and not list(erm_run.glob("*partial*"))


def test_evaluate_run_defaults_are_the_settings_defaults():
    import dataclasses
    import inspect

    from align.evaluate import evaluate_run
    from align.evaluation_presets import EvalSettings

    # Since issue 9 the settings are fields of the one `EvalConfig` that evaluate_run takes.
    default = inspect.signature(evaluate_run).parameters["config"].default
    for f in dataclasses.fields(EvalSettings):
        assert getattr(default, f.name) == f.default, f.name


def test_cli_evaluate_with_the_preset(erm_run, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from align.cli import app

    run = tmp_path / "erm"
    shutil.copytree(erm_run, run)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(run), "--preset", "dre_auc", "--max-batches", "1",
                              "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    record = json.loads((run / "evaluation-dre_auc.json").read_text())
    assert record["config"]["substrate"] == "dre_blur" and "dre_auc" in res.output
    assert not (run / "evaluation.json").exists()
    bad = runner.invoke(app, ["evaluate", str(run), "--preset", "dre_auc", "--substrate", "mean"])
    assert bad.exit_code == 2 and "fixes substrate" in bad.output
