"""The upstream (pre-training) task: classes, shapes, scenes (`align.data.upstream`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from align.data.synthetic_draw import shape_mask
from align.data.synthetic_styles import SHAPES, UPSTREAM_SHAPES
from align.data.upstream import ALL_STYLES, UpstreamConfig, render_upstream, render_upstream_set


def test_upstream_classes_are_disjoint_from_the_benchmark():
    assert not set(UPSTREAM_SHAPES) & set(SHAPES)
    assert set(UpstreamConfig().classes) == set(UPSTREAM_SHAPES) and len(UPSTREAM_SHAPES) >= 12
    with pytest.raises(ValueError, match=r"UpstreamConfig\.classes.*benchmark"):
        UpstreamConfig(classes=("ellipse", "circle"))


@pytest.mark.parametrize("kwargs, field", [
    (dict(classes=("ellipse",)), "classes"),
    (dict(classes="ellipse"), "classes"),
    (dict(styles=("photo", "watercolour")), "styles"),
    (dict(styles=()), "styles"),
    (dict(n_train=5), "n_train"),
    (dict(n_val=True), "n_val"),
])
def test_upstream_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"UpstreamConfig\.{field}"):
        UpstreamConfig(**kwargs)


def test_upstream_shapes_fit_their_disc_and_differ():
    size, cy, cx, r = 64, 32.0, 32.0, 20.0
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    for shape in UPSTREAM_SHAPES:
        for theta in np.linspace(0, 2 * math.pi, 7):
            m = shape_mask(shape, size, cy, cx, r, theta)
            assert 0.08 * math.pi * r * r < m.sum() < math.pi * r * r, shape
            assert (np.hypot(ys - cy, xs - cx)[m] <= r + 0.01).all(), shape  # fits the disc
    # No upstream shape is a rotation of another or of a benchmark shape: at the same centre
    # and size, their best overlap over rotations (every 10 degrees) stays below an IoU of 0.9
    # (the closest pair, pentagon and hexagon, reaches 0.87; circle and square reach 0.76).
    rotations = {b: [shape_mask(b, size, cy, cx, r, t) for t in np.radians(np.arange(0, 360, 10))]
                 for b in UPSTREAM_SHAPES + SHAPES}
    for i, a in enumerate(UPSTREAM_SHAPES):
        ma = rotations[a][0]
        for b in UPSTREAM_SHAPES[i + 1:] + SHAPES:
            best = max((ma & mb).sum() / (ma | mb).sum() for mb in rotations[b])
            assert best < 0.9, (a, b, best)
    with pytest.raises(ValueError, match="unknown shape"):
        shape_mask("blob", size, cy, cx, r, 0.0)


def test_upstream_scenes_are_deterministic_balanced_and_varied():
    config = UpstreamConfig()
    a, b = render_upstream(config, 3, 17, 32), render_upstream(config, 3, 17, 32)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert not np.array_equal(a[0], render_upstream(config, 4, 17, 32)[0])
    images, labels = render_upstream_set(config, 0, 0, 240, 32)
    assert images.shape == (240, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [20] * 12
    styles = {render_upstream(config, 0, i, 32)[2] for i in range(240)}
    assert styles == set(ALL_STYLES)  # the benchmark's four domain styles and two more
    part, _ = render_upstream_set(config, 0, 100, 20, 32)  # any subset renders the same
    assert np.array_equal(part, images[100:120])
