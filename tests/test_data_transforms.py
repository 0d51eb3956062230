"""Joint transforms: masks follow every geometric op exactly; colour ops leave masks alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as tnf
from PIL import Image
from torchvision.transforms import v2

from align.data.folder import DataError
from align.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    JointTransform,
    build_transform,
    denormalize,
    mask_to_tensor,
)


def square(h=60, w=80, rows=(10, 50), cols=(5, 35), value=255) -> tuple[Image.Image, Image.Image]:
    """A grey image with a bright rectangle, and the same rectangle as an 8-bit mask."""
    a = np.zeros((h, w), np.uint8)
    a[rows[0]:rows[1], cols[0]:cols[1]] = value
    return Image.fromarray(a).convert("RGB"), Image.fromarray(a)


def test_eval_resize_known_answer():
    img, mask = square(64, 64, rows=(16, 48), cols=(8, 40))
    x, m = build_transform(32, train=False)(img, mask)
    assert x.shape == (3, 32, 32) and m.shape == (1, 32, 32) and m.dtype == torch.float32
    expected = torch.zeros(1, 32, 32)
    expected[:, 8:24, 4:20] = 1.0  # halved exactly: nearest-exact samples source pixel 2i + 1
    assert torch.equal(m, expected)
    # The antialiased image's blurred edge still crosses 0.5 exactly where the mask does.
    grey = denormalize(x).mean(0, keepdim=True)
    assert torch.equal((grey > 0.5).float(), expected)


def test_horizontal_flip_known_answer():
    img, mask = square(6, 8, rows=(1, 4), cols=(0, 3))
    flip = JointTransform([v2.RandomHorizontalFlip(p=1.0)], [])
    x, m = flip(img, mask)
    m0 = torch.from_numpy(np.asarray(mask, np.float32) / 255.0)[None]
    assert torch.equal(m, m0.flip(-1))
    assert m[0, 1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    x0 = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
    assert torch.allclose(denormalize(x), x0.flip(-1), atol=1e-6)


def _edges(m: torch.Tensor) -> torch.Tensor:
    """Pixels where a resampled edge may blur: those with a differently-valued 8-neighbour, and
    the frame border (an edge just outside the crop blurs into it unseen by the mask)."""
    hi = tnf.max_pool2d(m[None], 3, 1, 1)[0]
    lo = -tnf.max_pool2d(-m[None], 3, 1, 1)[0]
    edges = hi != lo
    edges[..., [0, -1], :] = True
    edges[..., :, [0, -1]] = True
    return edges


def test_train_masks_follow_crop_and_flip_under_many_seeds():
    # Grey image: colour jitter and grayscale act as one increasing map of the grey level
    # (applied to every pixel alike), so the two pure levels stay the two extremes. Away from
    # the blurred edge every pixel must therefore agree with the mask, in every seed.
    img, mask = square()
    t = build_transform(24, train=True)
    flipped = 0
    for seed in range(60):
        torch.manual_seed(seed)
        x, m = t(img, mask)
        assert set(m.unique().tolist()) <= {0.0, 1.0}  # binary stays binary
        g = denormalize(x).mean(0, keepdim=True)
        hi, lo = g.max(), g.min()
        assert hi - lo > 0.2, seed  # both regions visible by construction of the crop range
        pure_hi, pure_lo = (g - hi).abs() < 0.02, (g - lo).abs() < 0.02
        assert bool((m[pure_hi] == 1).all()) and bool((m[pure_lo] == 0).all()), seed
        unsure = ~(pure_hi | pure_lo)
        assert bool(_edges(m)[unsure].all()), seed  # any doubt lies on the mask's own edge
        cols = torch.nonzero(m[0])[:, 1].float()
        flipped += int(cols.mean() > 12)  # the rectangle starts in the left part of the image
    assert 10 < flipped < 50  # both flip outcomes were exercised


def test_colour_ops_and_mask_do_not_change_the_image_draws():
    img, mask = square()
    t = build_transform(24, train=True)
    torch.manual_seed(3)
    x1, m1 = t(img, mask)
    torch.manual_seed(3)
    x2, m2 = t(img, None)
    assert m2 is None and torch.equal(x1, x2)
    torch.manual_seed(3)
    x3, m3 = t(img, mask)
    assert torch.equal(x1, x3) and torch.equal(m1, m3)


def test_soft_and_16bit_masks_survive_resampling():
    _, soft = square(value=128)
    torch.manual_seed(0)
    _, m = build_transform(24, train=True)(square()[0], soft)
    assert torch.allclose(m.unique(), torch.tensor([0.0, 128 / 255]))  # no blended values
    wide = Image.fromarray(np.full((4, 4), 32768, np.uint16))
    assert mask_to_tensor(wide).flatten()[0].item() == pytest.approx(32768 / 65535)
    f = Image.fromarray(np.full((4, 4), 1.5, np.float32))
    assert mask_to_tensor(f).max().item() == 1.0  # clamped to [0, 1]


def test_mask_size_mismatch_is_refused():
    img, _ = square()
    with pytest.raises(DataError, match="mask is 10x10 but image is 80x60"):
        build_transform(16, train=False)(img, Image.new("L", (10, 10)))


def test_eval_is_deterministic_and_normalised():
    img, mask = square()
    t = build_transform(16, train=False)
    torch.manual_seed(0)
    a = t(img, mask)
    b = t(img, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert build_transform(16, train=True, augment=False)(img, mask)[0].equal(a[0])
    black = denormalize(a[0])[:, 0, -1]  # a background pixel
    assert torch.allclose(black, torch.zeros(3), atol=1e-6)
    assert torch.allclose(a[0][:, 0, -1], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))
