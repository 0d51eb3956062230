"""Known answers for the shared loss pieces and the masker."""

import pytest
import torch

from align.losses import fill_like, resize_mask, same_class_partners, soft_bce, total_variation
from align.metrics.substrates import FILLS, SUBSTRATES
from align.models import build_backbone
from align.models.masker import Masker


def test_same_class_partners_pairs_within_class_and_never_self():
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2])
    for _ in range(20):
        p = same_class_partners(y)
        assert torch.equal(y[p], y)
        assert (p != torch.arange(len(y))).all()
    # a class with one sample pairs with itself
    assert same_class_partners(torch.tensor([3]))[0] == 0


def test_total_variation_known_answer():
    m = torch.zeros(1, 1, 4, 4)
    m[..., :, 2:] = 1.0  # one vertical edge: 4 of the 12 horizontal differences are 1
    assert torch.isclose(total_variation(m), torch.tensor(4 / 12))


def test_resize_mask_area_keeps_coverage():
    m = torch.zeros(1, 1, 8, 8)
    m[..., :4, :4] = 1
    r = resize_mask(m, (2, 2))
    assert torch.equal(r, torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))
    assert torch.isclose(resize_mask(m, (3, 3)).mean(), m.mean(), atol=0.05)


def test_fill_kinds():
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(fill_like(x, "zero"), torch.zeros_like(x))
    blurred = fill_like(x, "blur")
    assert blurred.std() < x.std()
    assert fill_like(x, "noise").shape == x.shape
    with pytest.raises(ValueError, match="unknown fill 'grey'"):
        fill_like(x, "grey")


def test_fills_are_the_substrates_own_functions():
    # One definition of each fill, blur parameters included; noise is a fill only.
    assert FILLS.get("blur") is SUBSTRATES.get("blur")
    assert FILLS.get("zero") is SUBSTRATES.get("zero")
    assert "noise" in FILLS and "noise" not in SUBSTRATES


def test_soft_bce_finite_at_saturation():
    pred = torch.tensor([0.0, 1.0, 0.5], requires_grad=True)
    loss = soft_bce(pred, torch.tensor([1.0, 0.0, 0.5]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_soft_bce_raises_attention_where_cam_is_zero_and_mask_is_one():
    """Regression: a clamp to [eps, 1 - eps] gave an exactly zero gradient below eps, so guidance
    could never raise a CAM pixel that is 0 where the mask is 1 (issue 12, item 3)."""
    eps = 1e-3
    pred = torch.tensor([0.0, 5e-4, 1.0, 1.0 - 5e-4, 0.3], requires_grad=True)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.3])
    soft_bce(pred, target, eps=eps, reduction="sum").backward()
    g = pred.grad
    assert (g[:2] < 0).all(), g  # descending raises the CAM where the mask is 1
    assert (g[2:4] > 0).all(), g  # and lowers it where the mask is 0
    # Known answer at CAM 0, mask 1: d/dp -log(eps + (1 - 2 eps) p) = -(1 - 2 eps) / eps.
    assert g[0].item() == pytest.approx(-(1 - 2 * eps) / eps, rel=1e-5)
    assert abs(g[4].item()) < 1e-2  # agreement: (almost) no push
    assert g.abs().max() <= 1 / eps  # bounded


def test_masker_output_and_size():
    mk = Masker()
    m = mk(torch.randn(2, 3, 64, 48))
    assert m.shape == (2, 1, 64, 48) and (m >= 0).all() and (m <= 1).all()
    n_masker = sum(p.numel() for p in mk.parameters())
    n_small = sum(p.numel() for p in build_backbone("smallcnn").parameters())
    n_r18 = sum(p.numel() for p in build_backbone("resnet18").parameters())
    assert n_masker < n_small / 2 and n_masker < n_r18 / 100
