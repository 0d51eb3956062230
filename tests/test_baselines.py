"""Known answers for the baselines' loss terms (SGT, RRR, GRADIA, HAICS, RES-G/L, Mixup, GroupDRO,
IRM) on tiny hand-built models and maps; the registry-wide smoke test is in test_algorithms.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from align.algorithms import ALGORITHMS, Batch, build_algorithm
from align.algorithms.gradia import gradia_loss, gradia_target
from align.algorithms.haics import haics_loss
from align.algorithms.irm import irm_penalty, scale_grad
from align.algorithms.mixup import mixup_objective
from align.algorithms.res import res_labels, res_robust_loss
from align.algorithms.rrr import rrr_terms
from align.algorithms.sgt import fill_masked, input_saliency, lowest_saliency_mask
from align.losses import binomial_blur3, masked_mean, normalize_by_max
from align.training.loop import train_step

MASK_SUPERVISED = {"gradia", "haics", "res_g", "res_l", "rrr"}
BASELINES = MASK_SUPERVISED | {"sgt", "mixup", "groupdro", "irm"}


def _build(name, num_classes=3, num_domains=2, **hp):
    torch.manual_seed(0)
    return build_algorithm(name, backbone="smallcnn", num_classes=num_classes,
                           num_domains=num_domains, hparams=hp)


def _batch(b=8, size=32, n_domains=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, 1, size, size)
    mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    return Batch(x=torch.randn(b, 3, size, size, generator=g), y=torch.arange(b) % 3,
                 mask=mask, n_domains=n_domains)


class Linear(nn.Module):
    """f(x) = W flatten(x) + b: its input gradients are known in closed form."""

    def __init__(self, c, h, w, k, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(k, c * h * w, generator=g, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(k, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def test_registry_metadata():
    assert BASELINES <= set(ALGORITHMS.names())
    for name in BASELINES:
        cls = ALGORITHMS.get(name)
        assert cls.needs_masks() == (name in MASK_SUPERVISED), name
        assert cls.__doc__ and all(h.source for h in cls.hparam_spec().values())


# ---------------------------------------------------------------------------------------- SGT
def test_sgt_masks_exactly_the_lowest_saliency_fraction():
    sal = torch.randn(3, 6, 5)
    mask = lowest_saliency_mask(sal, 0.3)  # k = floor(0.3 * 30) = 9 per image
    assert mask.shape == (3, 1, 6, 5) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [9, 9, 9]
    for b in range(3):
        s, m = sal[b].flatten(), mask[b].flatten()
        assert set(m.nonzero().flatten().tolist()) == set(s.argsort()[:9].tolist())
        assert s[m].max() < s[~m].min()


def test_sgt_fill_noise_in_channel_range_and_mean():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True
    noisy = fill_masked(x, mask, "noise")
    keep = ~mask.expand_as(x)
    assert torch.equal(noisy[keep], x[keep])
    lo = x.flatten(2).amin(2)[..., None, None].expand_as(x)
    hi = x.flatten(2).amax(2)[..., None, None].expand_as(x)
    changed = mask.expand_as(x)
    assert (noisy[changed] >= lo[changed]).all() and (noisy[changed] <= hi[changed]).all()
    meaned = fill_masked(x, mask, "mean")
    torch.testing.assert_close(meaned[:, :, 0, 0], x.mean(dim=(2, 3)))


def test_sgt_saliency_of_a_linear_model_and_masked_input():
    """For f(x) = W x + b the label's input gradient is W_y: saliency |mean_c W_y| is known."""
    algo = _build("sgt", mask_fraction=0.25)
    lin = Linear(3, 4, 4, 3).float()
    algo.classifier = lin
    x, y = torch.randn(2, 3, 4, 4), torch.tensor([2, 0])
    expected = lin.weight.detach()[y].view(2, 3, 4, 4).mean(1).abs()
    torch.testing.assert_close(input_saliency(lin, x, y, absolute=True), expected)
    signed = lin.weight.detach()[y].view(2, 3, 4, 4).mean(1)
    torch.testing.assert_close(input_saliency(lin, x, y, absolute=False), signed)
    lin.train()
    x_masked, mask = algo.masked_input(x, y)
    assert lin.training  # the eval-mode saliency pass restores the mode
    assert torch.equal(mask, lowest_saliency_mask(expected, 0.25))
    assert int(mask[0].sum()) == 4 and not x_masked.requires_grad
    assert torch.equal(x_masked[~mask.expand_as(x)], x[~mask.expand_as(x)])


def test_sgt_loss_is_ce_plus_weighted_kl():
    algo = _build("sgt", kl_weight=0.5)
    terms = algo.losses("classifier", _batch(), 0)
    torch.testing.assert_close(terms["loss"], terms["ce"] + 0.5 * terms["kl"])
    assert terms["kl"] >= 0


# ---------------------------------------------------------------------------------------- RRR
def test_rrr_penalty_of_a_linear_model_is_exact():
    """d sum_k log p_k / dx = sum_k W_k - K sum_j p_j W_j for f(x) = W x + b."""
    c, h, w, k = 2, 3, 3, 4
    lin = Linear(c, h, w, k)
    x = torch.randn(3, c, h, w, dtype=torch.float64)
    irrelevant = torch.zeros(3, 1, h, w, dtype=torch.float64)
    irrelevant[..., 0, :] = 1.0  # the top row is "irrelevant"
    logits, penalty = rrr_terms(lin, x, irrelevant)
    p = F.softmax(logits.detach(), dim=1)
    wt = lin.weight.detach()
    grad = (wt.sum(0) - k * p @ wt).view(3, c, h, w)
    expected = (irrelevant * grad).pow(2).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(penalty, expected)
    # double backprop: the penalty trains the weights
    penalty.backward()
    assert lin.weight.grad.abs().sum() > 0
    # nothing irrelevant, no penalty
    assert rrr_terms(lin, x, torch.zeros_like(irrelevant))[1] == 0


def test_rrr_loss_composition():
    algo = _build("rrr", guide_weight=3.0)
    terms = algo.losses("classifier", _batch(), 0)
    torch.testing.assert_close(terms["loss"], terms["ce"] + 3.0 * terms["rrr"])
    # (without masks the trainer refuses the run: test_train.py)


def test_rrr_leaves_out_samples_whose_mask_is_empty():
    """An empty mask carries no annotation, as for the Grad-CAM baselines: RRR used to read it as
    'everything irrelevant' and penalise the sample's whole input gradient."""
    algo = _build("rrr").eval()  # eval: samples do not interact, so subsets compare exactly
    batch = _batch()
    batch.mask[1::2] = 0.0  # every other sample: no annotation
    got = algo.losses("classifier", batch, 0)["rrr"]
    _, annotated_only = rrr_terms(algo.classifier, batch.x[0::2], 1 - batch.mask[0::2])
    torch.testing.assert_close(got, annotated_only, rtol=1e-5, atol=0)  # values are ~1e-8
    assert got > 0
    batch.mask.zero_()  # no annotation at all: no penalty (the trainer refuses such a dataset)
    assert algo.losses("classifier", batch, 0)["rrr"] == 0


# ---------------------------------------------------------------------------------------- GRADIA
def test_binomial_blur_is_opencv_gaussian_3x3_with_reflect101_border():
    m = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    k = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    kernel = (k[:, None] * k[None, :]).numpy()
    expected = [ndimage.correlate(m[i, 0].numpy(), kernel, mode="mirror") for i in range(2)]
    torch.testing.assert_close(binomial_blur3(m)[:, 0], torch.from_numpy(np.stack(expected)))


def test_gradia_target_known_answer():
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., 4:6, 4:6] = 1.0  # one cell of the 5x5 grid after area resizing
    target = gradia_target(mask, (5, 5))[0, 0]
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    torch.testing.assert_close(target, expected)


def test_gradia_loss_known_answers_and_empty_masks():
    mask = torch.zeros(2, 1, 10, 10)
    mask[0, :, 4:6, 4:6] = 1.0  # sample 1: empty mask, no annotation
    target = gradia_target(mask, (5, 5))
    assert gradia_loss(target, mask) == 0  # a CAM equal to the processed mask
    zeros = torch.zeros(2, 1, 5, 5)
    # only sample 0 counts: mean of its target = (1 + 4 * 0.5 + 4 * 0.25) / 25
    torch.testing.assert_close(gradia_loss(zeros, mask), torch.tensor(4 / 25))
    cam = torch.zeros(2, 1, 5, 5, requires_grad=True)
    loss = gradia_loss(cam, torch.zeros(2, 1, 10, 10))
    loss.backward()
    assert loss == 0 and torch.isfinite(cam.grad).all()
    assert normalize_by_max(torch.zeros(1, 1, 2, 2)).abs().sum() == 0


def test_gradia_loss_composition():
    algo = _build("gradia", guide_weight=2.0)
    terms = algo.losses("classifier", _batch(), 0)
    torch.testing.assert_close(terms["loss"], terms["ce"] + 2.0 * terms["exp"])


# ---------------------------------------------------------------------------------------- HAICS
def test_haics_bce_known_answer():
    cam = torch.tensor([0.25, 0.75]).view(1, 1, 1, 2)
    mask = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    # the CAM is squashed affinely into [eps, 1 - eps]: 0.75 -> 1e-3 + 0.998 * 0.75 = 0.7495
    expected = torch.tensor(-math.log(1e-3 + 0.998 * 0.75))
    torch.testing.assert_close(haics_loss(cam, mask, eps=1e-3), expected)
    # an empty-mask sample is left out; a saturated CAM becomes eps or 1 - eps
    cam2 = torch.cat([cam, torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)])
    mask2 = torch.cat([mask, torch.zeros(1, 1, 1, 2)])
    torch.testing.assert_close(haics_loss(cam2, mask2, eps=1e-3), expected)
    wrong = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    torch.testing.assert_close(haics_loss(wrong, mask, eps=1e-3), torch.tensor(-math.log(1e-3)))


# ---------------------------------------------------------------------------------------- RES
def test_res_robust_loss_known_answer():
    cam = torch.tensor([[0.75, 1.0], [0.5, 0.0]]).view(1, 1, 2, 2)
    label = torch.tensor([[1.0, 1.0], [-1.0, 0.0]]).view(1, 1, 2, 2)  # last pixel unannotated
    t = math.tanh(1.25)
    mean = (1.0 + (1 - t) + (1 - t)) / 3  # |tanh 0 - 1|, |tanh 1.25 - 1|, |tanh(-1.25) + 1|
    hinge, got_mean = res_robust_loss(cam, label, a=0.75, eta=0.1)
    torch.testing.assert_close(got_mean, torch.tensor(mean))
    torch.testing.assert_close(hinge, torch.tensor(mean - 0.1))
    assert res_robust_loss(cam, label, a=0.75, eta=0.5)[0] == 0  # below the slack: no loss
    # a left-out sample changes nothing
    both = res_robust_loss(torch.cat([cam, cam.flip(-1)]), torch.cat([label, label]), 0.75, 0.1,
                           sample_weight=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(both[1], torch.tensor(mean))


def test_res_labels_and_gaussian_imputation():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :4] = 1.0
    label = res_labels(mask, (2, 2))
    assert label.flatten().tolist() == [1.0, -1.0, 1.0, -1.0]
    algo = _build("res_g")
    assert not hasattr(algo, "imputer")  # a fixed transform: nothing to learn
    imputed = algo.imputed(mask, label)
    torch.testing.assert_close(imputed, normalize_by_max(binomial_blur3((label > 0).float())))
    # a CAM equal to the imputed mask has no imputation loss
    _, terms = algo.explanation(imputed, mask)
    assert terms["exp_imputed"] == 0


def test_res_learned_imputer_fits_the_cam_grid_and_trains():
    algo = _build("res_l")
    for size, grid in [(32, 4), (64, 8)]:
        mask = torch.zeros(2, 1, size, size)
        mask[..., : size // 2, :] = 1.0
        out = algo.imputed(mask, res_labels(mask, (grid, grid)))
        assert out.shape == (2, 1, grid, grid) and 0 <= out.min() and out.max() <= 1
    opt_params = {id(p) for g in algo.optimizers()["classifier"].param_groups for p in g["params"]}
    assert all(id(p) in opt_params for p in algo.imputer.parameters())
    before = [p.detach().clone() for p in algo.imputer.parameters()]
    terms = train_step(algo, _batch(), 0)
    assert {"exp_robust", "exp_imputed"} <= set(terms)
    assert all(not torch.equal(a, b) for a, b in zip(before, algo.imputer.parameters()))


def test_res_loss_composition():
    algo = _build("res_g", guide_weight=0.5)
    terms = algo.losses("classifier", _batch(), 0)
    torch.testing.assert_close(terms["exp"], terms["exp_robust"] + terms["exp_imputed"])
    torch.testing.assert_close(terms["loss"], terms["ce"] + 0.5 * terms["exp"])


# ---------------------------------------------------------------------------------------- Mixup
def test_mixup_with_lam_one_or_zero_is_erm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    xs, ys = torch.randn(3, 4, 3, 2, 2), torch.randint(0, 3, (3, 4))
    erm = F.cross_entropy(model(xs.flatten(0, 1)), ys.flatten())
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(mixup_objective(model, xs, ys, torch.ones(3), perm), erm)
    torch.testing.assert_close(mixup_objective(model, xs, ys, torch.zeros(3), perm), erm)


def test_mixup_pairs_known_answer():
    """Two domains, lam (0.3, 0.6), perm (1, 0): pair 0 mixes (d1, d0), pair 1 mixes (d0, d1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    xs, ys = torch.randn(2, 3, 1, 2, 2), torch.randint(0, 2, (2, 3))
    lam = torch.tensor([0.3, 0.6])
    expected = 0
    for p, (i, j) in enumerate([(1, 0), (0, 1)]):
        out = model(lam[p] * xs[i] + (1 - lam[p]) * xs[j])
        expected += (lam[p] * F.cross_entropy(out, ys[i])
                     + (1 - lam[p]) * F.cross_entropy(out, ys[j]))
    got = mixup_objective(model, xs, ys, lam, torch.tensor([1, 0]))
    torch.testing.assert_close(got, expected / 2)


# ---------------------------------------------------------------------------------------- GroupDRO
def test_groupdro_q_update_known_answer_and_resume():
    algo = _build("groupdro", groupdro_eta=0.5).eval()  # eval: per-domain CE = whole-batch CE
    batch = _batch()
    with torch.no_grad():
        ce = F.cross_entropy(algo.classifier(batch.x), batch.y, reduction="none")
        ce = ce.view(2, -1).mean(1)
    q1 = torch.exp(0.5 * ce) / torch.exp(0.5 * ce).sum()  # from the uniform start
    terms = algo.losses("classifier", batch, 0)
    torch.testing.assert_close(algo.q, q1)
    torch.testing.assert_close(terms["loss"], (q1 * ce).sum())
    q2 = q1 * torch.exp(0.5 * ce) / (q1 * torch.exp(0.5 * ce)).sum()
    algo.losses("classifier", batch, 1)
    torch.testing.assert_close(algo.q, q2)
    # q is a buffer: a resumed copy continues with the same weights and the same loss
    assert "q" in algo.state_dict()
    copy = _build("groupdro", groupdro_eta=0.5).eval()
    copy.load_state_dict(algo.state_dict())
    torch.testing.assert_close(copy.losses("classifier", batch, 2)["loss"],
                               algo.losses("classifier", batch, 2)["loss"])


# ---------------------------------------------------------------------------------------- IRM
def test_irm_scale_gradient_matches_domainbed_autograd():
    torch.manual_seed(0)
    logits, y = torch.randn(2, 6, 3, dtype=torch.float64), torch.randint(0, 3, (2, 6))
    for d in range(2):
        scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(F.cross_entropy(logits[d] * scale, y[d]), [scale])
        torch.testing.assert_close(scale_grad(logits, y)[d], g)


def test_irm_penalty_known_answer():
    # one domain, samples with logits (a, 0) and (b, 0), both class 0: dCE/ds = -z (1 - sigmoid z)
    a, b = 1.5, -0.5
    logits = torch.tensor([[[a, 0.0], [b, 0.0]]], dtype=torch.float64)
    y = torch.zeros(1, 2, dtype=torch.long)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = (-a * (1 - sig(a))) * (-b * (1 - sig(b)))
    torch.testing.assert_close(irm_penalty(logits, y),
                               torch.tensor([expected], dtype=torch.float64))
    assert irm_penalty(torch.zeros(2, 4, 3), torch.randint(0, 3, (2, 4))).abs().max() == 0


def test_irm_anneal_weight_and_adam_reset():
    algo = _build("irm", irm_lambda=7.0, irm_penalty_anneal_iters=3)
    batch = _batch()
    early = algo.losses("classifier", batch, 2)
    torch.testing.assert_close(early["loss"], early["ce"] + early["irm_penalty"])
    late = algo.losses("classifier", batch, 4)
    torch.testing.assert_close(late["loss"], late["ce"] + 7.0 * late["irm_penalty"])
    opt = algo.optimizers()["classifier"]
    for step in range(3):
        train_step(algo, batch, step)
    assert len(opt.state) > 0 and all(int(s["step"]) == 3 for s in opt.state.values())
    algo.losses("classifier", batch, 3)  # the switch: Adam's state is cleared in place
    assert len(opt.state) == 0 and algo.optimizers()["classifier"] is opt
    train_step(algo, batch, 3)
    train_step(algo, batch, 4)  # no reset after the switch
    assert all(int(s["step"]) == 2 for s in opt.state.values())


def test_masked_mean_weights_and_empty():
    v = torch.tensor([1.0, 3.0, 5.0])
    assert masked_mean(v, torch.tensor([1.0, 0.0, 1.0])) == 3.0
    assert masked_mean(v, torch.zeros(3)) == 0
