"""Known-answer tests for align.metrics.

The faithfulness metrics are checked on a model whose probabilities can be written down by hand:
it only reads the mean of the top-left quadrant, so with the zero substrate every perturbation's
probability is sigmoid(2 * fraction of the quadrant left intact). Batched results are checked
against a naive per-image, per-fraction loop.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from align.metrics import (
    EXPLAINERS,
    METRICS,
    Comprehensiveness,
    Deletion,
    EnergyPointingGame,
    Insertion,
    IoU,
    PointingGame,
    Sufficiency,
    aggregate,
    explain,
    make_substrate,
    topk_masks,
)

H = W = 8  # the quadrant is 4x4 = 16 of the 64 pixels
F64 = torch.float64
WEIGHT = 2.0


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tensors here are tiny: intra-op threads only add synchronisation, which on a busy CI
    # machine made single-image forward passes ~50x slower. Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


class QuadrantModel(nn.Module):
    """logits = [WEIGHT * m, 0], m = mean over channels and pixels of the top-left quadrant.

    Softmax of [a, 0] is [sigmoid(a), 1 - sigmoid(a)], so p_0 = sigmoid(2 m).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = x[:, :, : h // 2, : w // 2].mean(dim=(1, 2, 3))
        return torch.stack([WEIGHT * m, torch.zeros_like(m)], dim=1)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 4),
    )
    return net.eval()


def quadrant_input(batch: int = 2) -> torch.Tensor:
    """Ones in the quadrant (m = 1, so p_0 = sigmoid(2)), noise elsewhere (the model ignores it)."""
    torch.manual_seed(1)
    x = torch.randn(batch, 3, H, W, dtype=torch.float64)
    x[:, :, :4, :4] = 1.0
    return x


def quadrant_map(batch: int = 2, inside: float = 1.0, outside: float = 0.0) -> torch.Tensor:
    s = torch.full((batch, 1, H, W), outside, dtype=torch.float64)
    s[:, :, :4, :4] = inside
    return s


# --------------------------------------------------------------------------- top-k masks


def test_topk_masks_counts_nesting_and_ties():
    s = torch.rand(3, 1, 10, 10)
    fractions = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
    masks = topk_masks(s, fractions)
    assert masks.shape == (3, len(fractions), 1, 10, 10) and masks.dtype == torch.bool
    counts = masks.flatten(2).sum(-1)
    assert counts.tolist() == [[1, 5, 10, 20, 50, 100]] * 3
    # A bigger fraction contains every pixel of a smaller one.
    assert bool((masks[:, :-1] <= masks[:, 1:]).all())
    # The selected pixels really are the largest ones.
    top10 = s.flatten(1).topk(10).indices
    assert bool(masks[:, 2].flatten(1).gather(1, top10).all())
    # Ties (a constant map) resolve in row-major order: the first pixels are selected.
    const = topk_masks(torch.ones(1, 1, 4, 4), (0.25,))
    assert const.flatten().nonzero().flatten().tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------- known answers


def test_comprehensiveness_and_sufficiency_on_the_region_the_model_reads():
    model, x, s = QuadrantModel().eval(), quadrant_input(), quadrant_map()
    fractions = (0.125, 0.25, 0.5)  # 8, 16, 32 pixels
    comp = Comprehensiveness(substrate="zero", fractions=fractions)(model=model, x=x, saliency=s)
    suff = Sufficiency(substrate="zero", fractions=fractions)(model=model, x=x, saliency=s)
    # Removing 8 of the 16 quadrant pixels halves m; 16 or more remove it entirely.
    exp_comp = torch.tensor([sig(2) - sig(1), sig(2) - sig(0), sig(2) - sig(0)], dtype=F64)
    # Keeping 8 keeps half of m; keeping 16 or more keeps all of it.
    exp_suff = torch.tensor([sig(2) - sig(1), 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(comp.curves, exp_comp.expand(2, 3))
    torch.testing.assert_close(comp.values, exp_comp.mean().expand(2))
    torch.testing.assert_close(suff.curves, exp_suff.expand(2, 3))
    torch.testing.assert_close(suff.values, exp_suff.mean().expand(2))
    assert comp.fractions == list(fractions)
    assert comp.extras["target"].tolist() == [0, 0]
    torch.testing.assert_close(comp.extras["p_clean"], torch.full((2,), sig(2), dtype=F64))


def test_saliency_off_the_region_gives_no_comprehensiveness_and_full_sufficiency_drop():
    model, x = QuadrantModel().eval(), quadrant_input()
    s = quadrant_map(inside=0.0, outside=1.0)  # every quadrant pixel ranks last
    fractions = (0.125, 0.25, 0.5, 0.75)  # at most the 48 outside pixels
    comp = Comprehensiveness(substrate="zero", fractions=fractions)(model=model, x=x, saliency=s)
    suff = Sufficiency(substrate="zero", fractions=fractions)(model=model, x=x, saliency=s)
    torch.testing.assert_close(comp.values, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(suff.values, torch.full((2,), sig(2) - sig(0), dtype=torch.float64))


def test_explicit_target_is_tracked_instead_of_the_prediction():
    model, x, s = QuadrantModel().eval(), quadrant_input(), quadrant_map()
    target = torch.ones(2, dtype=torch.long)  # p_1 = 1 - sigmoid(2 m)
    comp = Comprehensiveness(substrate="zero", fractions=(0.25,))
    out = comp(model=model, x=x, saliency=s, target=target)
    expected = (1 - sig(2)) - (1 - sig(0))
    torch.testing.assert_close(out.values, torch.full((2,), expected, dtype=torch.float64))


def test_insertion_deletion_curves_and_auc_by_hand():
    model, x, s = QuadrantModel().eval(), quadrant_input(), quadrant_map()
    n_steps = 8  # 8 pixels per step: the quadrant is gone after 2 steps
    dele = Deletion(substrate="zero", n_steps=n_steps)(model=model, x=x, saliency=s)
    ins = Insertion(substrate="zero", n_steps=n_steps)(model=model, x=x, saliency=s)
    exp_del = [sig(2), sig(1)] + [sig(0)] * 7
    exp_ins = [sig(0), sig(1)] + [sig(2)] * 7
    torch.testing.assert_close(dele.curves, torch.tensor([exp_del] * 2, dtype=torch.float64))
    torch.testing.assert_close(ins.curves, torch.tensor([exp_ins] * 2, dtype=torch.float64))

    def trapezoid(ys):
        return sum((a + b) / 2 / n_steps for a, b in zip(ys[:-1], ys[1:]))

    torch.testing.assert_close(dele.values, torch.full((2,), trapezoid(exp_del), dtype=F64))
    torch.testing.assert_close(ins.values, torch.full((2,), trapezoid(exp_ins), dtype=F64))
    assert dele.fractions == [i / n_steps for i in range(n_steps + 1)]


@pytest.mark.parametrize("substrate", ["blur", "mean", "zero"])
def test_curve_endpoints_are_p_of_x_and_p_of_substrate(substrate):
    model = tiny_cnn()
    torch.manual_seed(2)
    x, s = torch.randn(3, 3, 16, 16), torch.rand(3, 1, 16, 16)
    target = model(x).argmax(1)
    with torch.no_grad():
        p_x = torch.softmax(model(x), 1).gather(1, target[:, None]).squeeze(1)
        sub = make_substrate(x, substrate)
        p_sub = torch.softmax(model(sub), 1).gather(1, target[:, None]).squeeze(1)
    dele = Deletion(substrate=substrate, n_steps=20)(model=model, x=x, saliency=s)
    ins = Insertion(substrate=substrate, n_steps=20)(model=model, x=x, saliency=s)
    assert dele.curves.shape == ins.curves.shape == (3, 21)
    torch.testing.assert_close(dele.curves[:, 0], p_x)
    torch.testing.assert_close(dele.curves[:, -1], p_sub)
    torch.testing.assert_close(ins.curves[:, 0], p_sub)
    torch.testing.assert_close(ins.curves[:, -1], p_x)


# --------------------------------------------------------------------------- batched == loop


def naive_probability(model, x1, s1, sub1, fraction, keep, target):
    """One image, one fraction, one model call: the reference the batched code must match."""
    flat = s1.flatten()
    n = math.floor(fraction * flat.numel() + 0.5)
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[torch.sort(flat, descending=True, stable=True).indices[:n]] = True
    mask = mask.view(1, 1, *x1.shape[-2:])
    img = torch.where(mask, x1, sub1) if keep else torch.where(mask, sub1, x1)
    with torch.no_grad():
        return float(torch.softmax(model(img), 1)[0, target])


CASES = [
    (Comprehensiveness, False, {"fractions": (0.01, 0.05, 0.1, 0.2, 0.5)}),
    (Sufficiency, True, {"fractions": (0.01, 0.05, 0.1, 0.2, 0.5)}),
    (Deletion, False, {"n_steps": 10}),
    (Insertion, True, {"n_steps": 10}),
]


@pytest.mark.parametrize("substrate", ["blur", "mean", "zero"])
@pytest.mark.parametrize("cls, keep, params", CASES, ids=[c[0].__name__ for c in CASES])
def test_batched_equals_per_image_per_fraction_loop(cls, keep, params, substrate):
    model = tiny_cnn().double()
    torch.manual_seed(3)
    x = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    s = torch.rand(5, 1, 16, 16, dtype=torch.float64)
    metric = cls(substrate=substrate, max_batch=7, **params)  # chunks cut across images
    batched = metric(model=model, x=x, saliency=s)
    sub = make_substrate(x, substrate)
    for i in range(5):
        target = int(model(x[i : i + 1]).argmax())
        p_clean = naive_probability(model, x[i : i + 1], s[i], sub[i : i + 1], 0.0, False, target)
        probs = [
            naive_probability(model, x[i : i + 1], s[i], sub[i : i + 1], f, keep, target)
            for f in metric.fractions
        ]
        if cls in (Comprehensiveness, Sufficiency):
            curve = torch.tensor([p_clean - p for p in probs], dtype=torch.float64)
            value = curve.mean()
            # The metric itself, called on one image and one fraction at a time, agrees too.
            singles = [
                cls(substrate=substrate, fractions=(f,))(
                    model=model, x=x[i : i + 1], saliency=s[i : i + 1]
                )
                for f in metric.fractions
            ]
            torch.testing.assert_close(
                torch.cat([r.values for r in singles]), curve, atol=1e-6, rtol=0
            )
        else:
            curve = torch.tensor(probs, dtype=torch.float64)
            value = torch.trapezoid(curve, torch.tensor(metric.fractions, dtype=torch.float64))
        torch.testing.assert_close(batched.curves[i], curve, atol=1e-6, rtol=0)
        torch.testing.assert_close(batched.values[i], value, atol=1e-6, rtol=0)


def test_chunking_does_not_change_results():
    model = tiny_cnn()
    torch.manual_seed(4)
    x, s = torch.randn(4, 3, 16, 16), torch.rand(4, 7, 7)  # [B, h, w] coarse maps are accepted
    whole = Comprehensiveness(max_batch=None)(model=model, x=x, saliency=s)
    chunked = Comprehensiveness(max_batch=3)(model=model, x=x, saliency=s)
    torch.testing.assert_close(whole.values, chunked.values, atol=1e-6, rtol=0)


def test_coarse_maps_are_upsampled_bilinearly():
    model = tiny_cnn()
    torch.manual_seed(5)
    x, coarse = torch.randn(2, 3, 16, 16), torch.rand(2, 1, 4, 4)
    fine = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    a = Sufficiency()(model=model, x=x, saliency=coarse)
    b = Sufficiency()(model=model, x=x, saliency=fine)
    torch.testing.assert_close(a.values, b.values)


# --------------------------------------------------------------------------- localisation


def square_gt(batch: int = 1) -> torch.Tensor:
    gt = torch.zeros(batch, 1, H, W)
    gt[:, :, 2:6, 2:6] = 1.0  # 16 pixels
    return gt


def localise(s: torch.Tensor, gt: torch.Tensor, **iou_kw) -> tuple[float, float, float]:
    iou = IoU(**iou_kw)(saliency=s, gt_mask=gt).values
    pg = PointingGame()(saliency=s, gt_mask=gt).values
    energy = EnergyPointingGame()(saliency=s, gt_mask=gt).values
    return float(iou[0]), float(pg[0]), float(energy[0])


def test_map_equal_to_the_mask_scores_one_everywhere():
    gt = square_gt()
    assert localise(gt.clone(), gt) == (1.0, 1.0, 1.0)
    assert localise(gt.clone(), gt, mode="gt_area") == (1.0, 1.0, 1.0)


def test_half_covering_map():
    gt = square_gt()
    s = gt.clone()
    s[:, :, 0, :] = 1.0  # 8 more pixels outside ...
    s[:, :, 7, :] = 1.0  # ... and 8 more: 16 inside, 16 outside
    iou, pg, energy = localise(s, gt)
    assert iou == pytest.approx(0.5) and energy == pytest.approx(0.5)
    assert pg == 0.0  # the first maximum (row 0) is outside the mask
    # Half of the mask, nothing outside: IoU 8/16, yet all the energy is inside.
    s = torch.zeros_like(gt)
    s[:, :, 2:6, 2:4] = 1.0
    iou, pg, energy = localise(s, gt)
    assert (iou, pg, energy) == (0.5, 1.0, 1.0)


def test_iou_gt_area_mode_uses_the_top_pixels():
    gt = square_gt()
    s = torch.linspace(0, 1, H * W).view(1, 1, H, W)  # the last 16 pixels (rows 6-7) rank first
    iou = IoU(mode="gt_area")(saliency=s, gt_mask=gt).values
    assert float(iou[0]) == 0.0
    s2 = s + 10 * gt  # the mask's pixels now rank first
    assert float(IoU(mode="gt_area")(saliency=s2, gt_mask=gt).values[0]) == 1.0


def test_constant_and_all_zero_maps():
    gt = square_gt()
    # Constant map: min-max -> 0 -> nothing selected; no peak; energy at chance, |gt| / N.
    assert localise(torch.full((1, 1, H, W), 0.3), gt) == (0.0, 0.0, pytest.approx(16 / 64))
    # All-zero map: no energy at all -> 0 (not NaN, so it is not excluded).
    iou, pg, energy = localise(torch.zeros(1, 1, H, W), gt)
    assert (iou, pg, energy) == (0.0, 0.0, 0.0)
    result = EnergyPointingGame()(saliency=torch.zeros(1, 1, H, W), gt_mask=gt)
    assert result.n_valid == 1 and result.n_empty == 0


def test_empty_masks_are_nan_and_counted():
    gt = torch.cat([square_gt(), torch.zeros(1, 1, H, W), square_gt()])
    s = torch.cat([square_gt(), square_gt(), torch.zeros(1, 1, H, W)])
    for metric in (IoU(), IoU(mode="gt_area"), PointingGame(), EnergyPointingGame()):
        result = metric(saliency=s, gt_mask=gt)
        assert math.isnan(float(result.values[1])), metric
        assert result.n_empty == 1 and result.n_valid == 2 and result.n_excluded == 1
        summary = aggregate(result)
        assert (summary.n_valid, summary.n_excluded) == (2, 1)
        assert summary.mean == pytest.approx(0.5)  # 1 on the first sample, 0 on the third


def test_pointing_game_ties_tolerance_and_soft_masks():
    gt = square_gt()
    s = torch.zeros(1, 1, H, W)
    s[0, 0, 3, 3] = 1.0
    s[0, 0, 7, 7] = 1.0  # an equal maximum later in row-major order: the first one counts
    assert float(PointingGame()(saliency=s, gt_mask=gt).values[0]) == 1.0
    s = torch.zeros(1, 1, H, W)
    s[0, 0, 6, 3] = 1.0  # one pixel below the mask
    assert float(PointingGame()(saliency=s, gt_mask=gt).values[0]) == 0.0
    assert float(PointingGame(tolerance=1)(saliency=s, gt_mask=gt).values[0]) == 1.0
    soft = gt * 0.5  # 0.5 is inside ...
    assert float(PointingGame()(saliency=gt, gt_mask=soft).values[0]) == 1.0
    below = gt * 0.49  # ... 0.49 is not, so this mask is empty
    assert math.isnan(float(PointingGame()(saliency=gt, gt_mask=below).values[0]))


def test_energy_clips_negative_values():
    gt = square_gt()
    s = gt - 5 * (1 - gt)  # strongly negative outside: no positive energy there
    assert float(EnergyPointingGame()(saliency=s, gt_mask=gt).values[0]) == 1.0


# --------------------------------------------------------------------------- interface


def test_registry_metadata():
    assert METRICS.names() == [
        "comprehensiveness",
        "sufficiency",
        "insertion",
        "deletion",
        "iou",
        "pointing_game",
        "energy_pointing_game",
    ]
    for name in METRICS.names():
        meta = METRICS.get(name).metadata()
        assert meta["name"] == name
        assert meta["direction"] in ("higher", "lower")
        assert meta["needs_model"] == (meta["category"] == "faithfulness")
        assert meta["needs_gt_mask"] == (meta["category"] == "localisation")
    assert METRICS.get("sufficiency").direction == "lower"
    assert METRICS.get("deletion").direction == "lower"


def test_missing_or_bad_inputs_are_refused():
    x, s = quadrant_input(), quadrant_map()
    with pytest.raises(ValueError, match="needs `model`"):
        Comprehensiveness()(x=x, saliency=s)
    with pytest.raises(ValueError, match="needs `gt_mask`"):
        IoU()(saliency=s)
    with pytest.raises(ValueError, match="NaN"):
        Comprehensiveness()(model=QuadrantModel().eval(), x=x, saliency=s * float("nan"))
    with pytest.raises(ValueError):
        Comprehensiveness(fractions=(0.1, 1.5))
    with pytest.raises(KeyError, match="substrate"):
        make_substrate(x, "noise")


def test_training_mode_model_warns():
    model = tiny_cnn().train()
    x, s = torch.randn(2, 3, 16, 16), torch.rand(2, 1, 16, 16)
    with pytest.warns(UserWarning, match="eval"):
        Comprehensiveness()(model=model, x=x, saliency=s)


def test_aggregate_pools_batches():
    a = torch.tensor([1.0, float("nan")])
    b = torch.tensor([0.0, 0.5, 1.0])
    summary = aggregate([a, b])
    assert summary.mean == pytest.approx(2.5 / 4)
    assert (summary.n_valid, summary.n_excluded) == (4, 1)
    assert math.isnan(aggregate(torch.tensor([float("nan")])).mean)


# --------------------------------------------------------------------------- substrates


def test_substrates():
    torch.manual_seed(6)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(make_substrate(x, "blur"), TF.gaussian_blur(x, [11, 11], [5.0, 5.0]))
    mean = make_substrate(x, "mean")
    assert mean.shape == x.shape
    torch.testing.assert_close(mean[:, :, 5, 7], x.mean(dim=(2, 3)))
    torch.testing.assert_close(mean[:, :, 0, 0], x.mean(dim=(2, 3)))
    assert bool((make_substrate(x, "zero") == 0).all())
    custom = torch.full((1, 3, 1, 1), 0.25)
    assert bool((make_substrate(x, custom) == 0.25).all())


# --------------------------------------------------------------------------- explainers


@pytest.mark.parametrize("name", ["input_gradient", "integrated_gradients"])
def test_captum_explainers_return_non_negative_maps(name):
    pytest.importorskip("captum")
    model = tiny_cnn()
    x = torch.randn(3, 3, 16, 16)
    maps = explain(name, model, x, **({"n_steps": 8} if name == "integrated_gradients" else {}))
    assert maps.shape == (3, 1, 16, 16)
    assert bool(torch.isfinite(maps).all()) and bool((maps >= 0).all())
    assert not maps.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_explainer_returns_non_negative_maps():
    pytest.importorskip("align.explain.gradcam")
    model = tiny_cnn()
    x = torch.randn(3, 3, 16, 16)
    maps = explain("gradcam", model, x, target=torch.tensor([0, 1, 2]))
    assert maps.shape == (3, 1, 16, 16)
    assert bool(torch.isfinite(maps).all()) and bool((maps >= 0).all())
    assert "gradcam" == EXPLAINERS.names()[0]


def test_missing_captum_gives_an_install_hint(monkeypatch):
    # A None entry in sys.modules makes the import raise ImportError, as if Captum were absent.
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ImportError, match=r"pip install align\[captum\]"):
        explain("input_gradient", tiny_cnn(), torch.randn(1, 3, 16, 16))
