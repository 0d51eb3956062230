"""Known answers for the shared mask and map primitives in `align.maps`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from align.maps import DiscDilation, dilate, iou, minmax


def _masks(*rows: str) -> torch.Tensor:
    """A batch of 1-D masks from strings like "1100" (one string per sample)."""
    return torch.tensor([[c == "1" for c in r] for r in rows])


# --- iou --------------------------------------------------------------------------------------


def test_iou_known_answers() -> None:
    a = _masks("1100", "1111", "0000", "1000", "0000")
    b = _masks("0110", "1111", "1111", "0100", "0000")
    got = iou(a, b, empty=-1.0)
    assert got.dtype == torch.float64
    assert got.tolist() == [1 / 3, 1.0, 0.0, 0.0, -1.0]


def test_iou_empty_rule_is_the_callers() -> None:
    none = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    assert iou(none, none, empty=1.0).item() == 1.0  # the mask tools: full agreement
    assert math.isnan(iou(none, none, empty=float("nan")).item())  # the metrics: no score
    one = none.clone()
    one[0, 0, 1, 1] = True
    assert iou(none, one, empty=float("nan")).item() == 0.0  # only 0/0 takes the rule


def test_iou_reduces_every_non_batch_dim_and_checks_inputs() -> None:
    a = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[0, 0, :2] = True  # 8 pixels
    b[0, 0, :, :2] = True  # 8 pixels, 4 shared
    a[1, 0, 0, 0] = b[1, 0, 0, 0] = True
    assert iou(a, b, empty=0.0).tolist() == [4 / 12, 1.0]
    assert iou(a[:0], b[:0], empty=0.0).shape == (0,)
    with pytest.raises(ValueError, match="shapes differ"):
        iou(a, b[:, :, :3], empty=0.0)
    with pytest.raises(TypeError, match="boolean"):
        iou(a.float(), b, empty=0.0)


# --- minmax -----------------------------------------------------------------------------------


def test_minmax_known_answers() -> None:
    m = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    out = minmax(m, eps=0.0)
    assert out.tolist() == [[[0.0, 0.5], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]
    torch.testing.assert_close(minmax(m[:, None], eps=0.0), out[:, None])  # shape-independent


def test_minmax_eps_decides_what_counts_as_constant() -> None:
    m = torch.tensor([[0.0, 1e-9], [0.0, 2.0]], dtype=torch.float64)
    assert minmax(m, eps=0.0).tolist() == [[0.0, 1.0], [0.0, 1.0]]
    assert minmax(m, eps=1e-8).tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_minmax_constant_map_has_zero_gradient_not_nan() -> None:
    m = torch.full((1, 3, 3), 2.0, requires_grad=True)
    minmax(m, eps=1e-8).sum().backward()
    assert torch.equal(m.grad, torch.zeros_like(m))


# --- dilate -----------------------------------------------------------------------------------


def _dot(size: int = 7) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[size // 2, size // 2] = True
    return m


@pytest.mark.parametrize("radius, n", [(0, 1), (1, 5), (1.5, 9), (2, 13), (math.sqrt(5), 21)])
def test_disc_dilation_of_a_dot_is_the_disc(radius: float, n: int) -> None:
    # Offsets with dx^2 + dy^2 <= r^2: r = 1 a plus sign, 1.5 the 3x3 square, 2 adds (0, +-2),
    # sqrt(5) adds the eight (+-1, +-2) (a pixel exactly at the radius counts).
    out = dilate(_dot(), radius, shape="disc")
    assert int(out.sum()) == n
    ys, xs = torch.nonzero(out, as_tuple=True)
    assert bool((((ys - 3) ** 2 + (xs - 3) ** 2) <= radius**2 + 1e-9).all())


def test_square_dilation_of_a_dot_and_at_the_border() -> None:
    m = _dot()
    m[0, 0] = True
    out = dilate(m, 1, shape="square")
    assert bool(out[2:5, 2:5].all()) and bool(out[:2, :2].all())
    assert int(out.sum()) == 9 + 4  # the corner's square is cut by the border
    assert torch.equal(dilate(m, 0, shape="square"), m)


def test_dilate_batches_leading_dims_and_keeps_empty_masks_empty() -> None:
    batch = torch.stack([_dot(), torch.zeros(7, 7, dtype=torch.bool)])[:, None]  # [2, 1, 7, 7]
    for shape in ("disc", "square"):
        out = dilate(batch, 2, shape=shape)
        assert out.shape == batch.shape and out.dtype == torch.bool
        assert torch.equal(out[0, 0], dilate(_dot(), 2, shape=shape))
        assert not out[1].any()


def test_dilate_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="whole pixels"):
        dilate(_dot(), 1.5, shape="square")
    with pytest.raises(ValueError, match=">= 0"):
        dilate(_dot(), -1)
    with pytest.raises(ValueError, match="unknown dilation shape"):
        dilate(_dot(), 1, shape="diamond")
    with pytest.raises(ValueError, match="boolean"):
        dilate(_dot().float(), 1)


def test_disc_dilation_reuses_one_distance_transform() -> None:
    m = _dot().numpy()
    d = DiscDilation(m)
    assert d.distance[3, 5] == 2.0 and d.distance[3, 3] == 0.0
    for r in (0.0, 1.0, 2.5, 9.0):
        assert np.array_equal(d(r), dilate(torch.from_numpy(m), r).numpy())
    assert DiscDilation(np.zeros((3, 3), bool)).distance is None
