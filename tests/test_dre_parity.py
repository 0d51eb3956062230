"""`dre` against DRE's public code, re-typed literally (`dre/mixuploss.py`, `dre/train.py`).

The reference below is DRE's `MixupLoss` line by line (a Python loop over the classes, separate
forward passes per class, DRE's `norm` without epsilon, `torch.linalg.norm(ord=1, dim=(1, 2))`)
with Captum's `LayerGradCam` re-typed in three lines (channel weights from a plain
`torch.autograd.grad`, hence constants; no ReLU). The random draws (each class's `randperm`, the
per-sample lambdas) are injected into both, so values and gradients must agree.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from align.algorithms import Batch, build_algorithm
from align.algorithms.dre import cam_sparsity
from align.explain.gradcam import gradcam_from_features
from align.losses import same_class_partners, same_class_permutation

K = 4  # classes of the model; class 3 is absent from the batch, class 2 has a single sample
Y = torch.tensor([0, 1, 0, 1, 0, 2, 1, 0, 1, 0, 0, 1])
OLD = dict(mix_lambda="per_step", cam_relu=True, cam_weight_grad=True, sparsity_form="mean",
           pairing="distinct", reduction="batch")


def _algo(name="dre", **hp):
    torch.manual_seed(0)
    # BN frozen, as DRE's ResNet: the samples do not interact, so DRE's per-class forward passes
    # and our pooled ones give the same values.
    # (`train()` applies the freeze, as the training loop's every step does.)
    return build_algorithm(name, backbone="smallcnn", num_classes=K, num_domains=2,
                           hparams=hp, freeze_bn=True).train()


def _batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(len(Y), 3, 32, 32, generator=g)
    return Batch(x=x, y=Y.clone(), n_domains=2)


def _draws(seed=5):
    """Per-class permutations (DRE's `randperm`, self-pairs included), the global partner index
    they imply, and per-sample lambdas from Beta(0.2, 0.2)."""
    g = torch.Generator().manual_seed(seed)
    perms, partner = {}, torch.arange(len(Y))
    for c in range(K):
        idx = torch.nonzero(Y == c).flatten()
        if len(idx):
            perms[c] = torch.randperm(len(idx), generator=g)
            partner[idx] = idx[perms[c]]
    lams = torch.distributions.Beta(0.2, 0.2).sample((len(Y),))
    return perms, partner, lams


# ------------------------------------------------------------------ DRE, re-typed


def dre_norm(x):
    mx = x.reshape(x.shape[0], -1).max(dim=-1, keepdim=True)[0]
    mn = x.reshape(x.shape[0], -1).min(dim=-1, keepdim=True)[0]
    return (x - mn.unsqueeze(2).unsqueeze(3)) / (mx.unsqueeze(2).unsqueeze(3) - mn.unsqueeze(2).unsqueeze(3))


def layer_gradcam(classifier, inp, target):
    """Captum's LayerGradCam.attribute(inp, target) with its defaults (no ReLU)."""
    logits, acts = classifier.forward_with_features(inp)
    (grads,) = torch.autograd.grad(torch.unbind(logits[:, target]), acts)  # constants
    return torch.sum(torch.mean(grads, dim=(2, 3), keepdim=True) * acts, dim=1, keepdim=True)


def dre_mixup_loss(classifier, inputs, targets, num_classes, perms, lams):
    exp_loss, sparse_loss, mix_ce_loss = 0.0, 0.0, 0.0
    for i in range(num_classes):
        if (targets == i).sum() == 0:
            continue
        inp = inputs[targets == i]
        tag = targets[targets == i]
        indexes = perms[i]
        inp_ = inp[indexes]
        attr_norm = dre_norm(layer_gradcam(classifier, inp, i))
        attr_norm_ = attr_norm[indexes]
        mix_lambda = lams[targets == i].view(-1, 1, 1, 1)
        mixup = mix_lambda * inp + (1 - mix_lambda) * inp_
        attr_mixup = mix_lambda * attr_norm + (1 - mix_lambda) * attr_norm_
        attr_mix_norm = dre_norm(layer_gradcam(classifier, mixup, i))
        exp_loss += F.l1_loss(attr_mix_norm, attr_mixup)
        sparse_loss += (torch.mean(torch.linalg.norm(attr_norm, dim=(1, 2), ord=1))
                        + torch.mean(torch.linalg.norm(attr_mix_norm, dim=(1, 2), ord=1))) / 2
        mix_ce_loss += F.cross_entropy(classifier(mixup), tag)
    return exp_loss / num_classes, sparse_loss / num_classes, mix_ce_loss / num_classes


def dre_train_loss(classifier, inputs, targets, perms, lams):
    ce = F.cross_entropy(classifier(inputs), targets)
    exp, sparse, mix_ce = dre_mixup_loss(classifier, inputs, targets, K, perms, lams)
    return {"loss": ce + 1.0 * exp + 0.5 * sparse + 0.1 * mix_ce, "ce": ce,
            "reg_exp": exp, "reg_sparse": sparse, "reg_mixce": mix_ce}


def _grads(algo, loss):
    algo.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in algo.named_parameters() if p.grad is not None}


def _inject(monkeypatch, algo, partner, lams):
    monkeypatch.setattr(algo, "draw_partners", lambda y: partner)
    monkeypatch.setattr(algo, "draw_lambdas", lambda n, device: lams)


# ------------------------------------------------------------------ parity


def test_dre_defaults_match_dre_code_term_by_term(monkeypatch):
    algo, batch = _algo(), _batch()
    perms, partner, lams = _draws()
    assert (partner == torch.arange(len(Y)))[Y == 2].all()  # the lone sample pairs with itself
    _inject(monkeypatch, algo, partner, lams)
    ours = algo.losses("classifier", batch, 0)
    g_ours = _grads(algo, ours["loss"])
    ref = dre_train_loss(algo.classifier, batch.x, batch.y, perms, lams)
    g_ref = _grads(algo, ref["loss"])
    for k, v in ref.items():
        torch.testing.assert_close(ours[k], v, atol=1e-5, rtol=0, msg=k)
    assert ref["reg_sparse"] > 1.5 * ours["reg_exp"] > 0  # the terms compared are not all ~0
    assert g_ours.keys() == g_ref.keys()
    for n in g_ref:  # incl. the constant Grad-CAM channel weights (no second-order term)
        torch.testing.assert_close(g_ours[n], g_ref[n], atol=1e-5, rtol=1e-4, msg=n)


def test_reference_gradcam_is_captums():
    """The re-typed LayerGradCam equals Captum's, values and gradients (constant weights)."""
    captum_attr = pytest.importorskip("captum.attr")
    algo, batch = _algo(), _batch()
    inp = batch.x[Y == 0]
    ref = captum_attr.LayerGradCam(algo.classifier, algo.classifier.cam_layer).attribute(inp, target=0)
    g_ref = _grads(algo, (ref ** 2).sum())
    ours = layer_gradcam(algo.classifier, inp, 0)
    g_ours = _grads(algo, (ours ** 2).sum())
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    assert ref.min() < 0  # no ReLU
    for n in g_ref:
        torch.testing.assert_close(g_ours[n], g_ref[n], atol=1e-6, rtol=1e-5, msg=n)


def test_all_options_off_reproduce_the_previous_formula():
    """The previous `reg_terms`, re-typed: one lam per step, partners never self, ReLU and
    second-order Grad-CAM, plain means over the batch."""
    batch = _batch()
    old = _algo(**OLD)
    torch.manual_seed(7)
    ours = old.losses("classifier", batch, 0)
    g_ours = _grads(old, ours["loss"])

    torch.manual_seed(7)
    clf, x, y = old.classifier, batch.x, batch.y
    logits, feats = clf.forward_with_features(x)
    cam = gradcam_from_features(feats, logits, y, create_graph=True, relu=True, normalize=True)
    partner = same_class_partners(y)
    lam = torch.distributions.Beta(torch.tensor(0.2), torch.tensor(0.2)).sample()
    x_mix = lam * x + (1 - lam) * x[partner]
    logits_mix, feats_mix = clf.forward_with_features(x_mix)
    cam_mix = gradcam_from_features(feats_mix, logits_mix, y, create_graph=True, relu=True,
                                    normalize=True)
    ref = {"ce": F.cross_entropy(logits, y),
           "reg_exp": F.l1_loss(cam_mix, lam * cam + (1 - lam) * cam[partner]),
           "reg_sparse": 0.5 * (cam.mean() + cam_mix.mean()),
           "reg_mixce": F.cross_entropy(logits_mix, y)}
    ref["reg"] = ref["reg_exp"] + 0.5 * ref["reg_sparse"] + 0.1 * ref["reg_mixce"]
    ref["loss"] = ref["ce"] + ref["reg"]
    g_ref = _grads(old, ref["loss"])
    for k, v in ref.items():
        torch.testing.assert_close(ours[k], v, atol=1e-6, rtol=1e-6, msg=k)
    for n in g_ref:
        torch.testing.assert_close(g_ours[n], g_ref[n], atol=1e-6, rtol=1e-5, msg=n)


# ------------------------------------------------------------------ each option


def test_cam_relu_and_weight_grad_options():
    batch = _batch()
    relu, plain, second = _algo(cam_relu=True), _algo(), _algo(cam_weight_grad=True)
    logits, feats = plain.classifier.forward_with_features(batch.x)
    raw = gradcam_from_features(feats, logits, Y, create_graph=True, relu=False, normalize=False)
    assert raw.min() < 0
    torch.testing.assert_close(relu.cam(feats, logits, Y),
                               gradcam_from_features(feats, logits, Y, relu=True))
    torch.testing.assert_close(plain.cam(feats, logits, Y),
                               gradcam_from_features(feats, logits, Y, relu=False))
    # Second-order: same map, other gradients.
    g = {}
    for name, a in (("const", plain), ("second", second)):
        lg, ft = a.classifier.forward_with_features(batch.x)
        m = a.cam(ft, lg, Y)
        g[name] = (m, _grads(a, (m ** 2).sum()))
    torch.testing.assert_close(g["const"][0], g["second"][0])
    head = "classifier.head.weight"  # only reaches the map through the channel weights
    assert head not in g["const"][1] or g["const"][1][head].abs().max() == 0
    assert g["second"][1][head].abs().max() > 0


def test_cam_sparsity_known_answer():
    cam = torch.tensor([[[[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]]]])  # [1, 1, 2, 3]
    assert torch.isclose(cam_sparsity(cam, "dre"), torch.tensor([(1 + 1 + 0.5) / 3])).all()
    assert torch.isclose(cam_sparsity(cam, "mean"), torch.tensor([2.5 / 6])).all()
    maps = torch.rand(5, 1, 7, 6)
    torch.testing.assert_close(cam_sparsity(maps, "dre"),
                               torch.linalg.norm(maps, ord=1, dim=(1, 2)).mean(dim=1))


def test_sample_weights_per_class_and_batch():
    y = torch.tensor([0, 0, 0, 1])
    w = _algo().sample_weights(y)  # K = 4 classes, two absent: they still count in K
    torch.testing.assert_close(w, torch.tensor([1 / 12, 1 / 12, 1 / 12, 1 / 4]))
    torch.testing.assert_close(_algo(reduction="batch").sample_weights(y), torch.full((4,), 0.25))


def test_pairings():
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 3])
    dre, distinct = _algo(), _algo(pairing="distinct")
    self_pairs = 0
    for _ in range(200):
        p = dre.draw_partners(y)
        assert torch.equal(y[p], y) and torch.equal(p.sort().values, torch.arange(len(y)))
        self_pairs += int((p == torch.arange(len(y)))[:-1].sum())
        q = distinct.draw_partners(y)
        assert torch.equal(y[q], y) and (q != torch.arange(len(y)))[:-1].all()
    # A uniform permutation of n items has one fixed point on average: 3 classes of 2-3 samples.
    assert 2.5 * 200 < self_pairs < 3.5 * 200
    assert same_class_permutation(torch.tensor([3]))[0] == 0


def test_lambda_draws():
    torch.manual_seed(0)
    lam = _algo().draw_lambdas(1000, torch.device("cpu"))
    assert lam.shape == (1000,) and lam.unique().numel() > 900  # float32 rounds some to 1
    assert abs(lam.mean() - 0.5) < 0.05 and ((lam < 0.1) | (lam > 0.9)).float().mean() > 0.5
    step = _algo(mix_lambda="per_step").draw_lambdas(7, torch.device("cpu"))
    assert step.shape == (7,) and step.unique().numel() == 1


def test_unknown_choice_is_an_error():
    with pytest.raises(ValueError, match="pairing 'x'"):
        _algo(pairing="x")
    with pytest.raises(ValueError, match="reduction"):
        _algo("align", reduction="mean")


def test_align_without_guidance_keeps_dre_parity(monkeypatch):
    """ALIGN's L_reg is DRE's, defaults included."""
    batch = _batch()
    perms, partner, lams = _draws()
    align = _algo("align", guidance="none")
    _inject(monkeypatch, align, partner, lams)
    ours = align.losses("classifier", batch, 10_000)
    ref = dre_train_loss(align.classifier, batch.x, batch.y, perms, lams)
    for k, v in ref.items():
        torch.testing.assert_close(ours[k], v, atol=1e-5, rtol=0, msg=k)
