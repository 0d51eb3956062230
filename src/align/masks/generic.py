"""A weight-free, task-agnostic foreground segmentation: the built-in ``generic`` mask source.

It stands in for "a general-purpose segmentation model" (such as SAM) in experiments that ask
how well masks that know nothing about the task supervise explanations. Like such a model it sees
only the image - never the class or the dataset - and it has no learned weights, so it is fast,
deterministic and needs no download. It is *not* a good segmenter of cluttered natural images;
its job is to be an honest, reproducible, task-blind baseline.

Algorithm (boundary-contrast saliency, after the "background prior" of saliency detection):

1. Over-segment the image into about `n_segments` SLIC superpixels (colour + position k-means in
   CIELAB; `compactness` trades colour fidelity for regular shapes; Gaussian pre-smoothing
   `sigma`).
2. Take the superpixels touching the image border as samples of the background: photographers
   frame objects, so the border is mostly background.
3. Score each superpixel by how different its mean Lab colour is from the border superpixels:
   the `border_quantile` quantile of its Euclidean (Delta E 1976) distances to them. A low quantile
   means "background if it matches some sizeable part of the border", which tolerates a
   background of several colours and an object that touches the border in a few places.
4. If no superpixel differs from the border by at least `min_contrast` Delta E, the image has no
   distinct object and the mask is empty. Otherwise split the pixel-level scores with Otsu's
   threshold into object and background.
5. Optionally fill holes in the object (`fill_holes`), as objects are usually solid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage import color, segmentation
from skimage.filters import threshold_otsu

GENERIC_DEFAULTS: dict[str, Any] = {
    "n_segments": 200,
    "compactness": 10.0,
    "sigma": 1.0,
    "border_quantile": 0.25,
    "min_contrast": 5.0,
    "fill_holes": False,
}


def check_generic_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the parameter when a value is out of range."""
    if int(params["n_segments"]) < 2:
        raise ValueError(f"generic: n_segments must be >= 2, got {params['n_segments']}")
    if float(params["compactness"]) <= 0:
        raise ValueError(f"generic: compactness must be > 0, got {params['compactness']}")
    if float(params["sigma"]) < 0:
        raise ValueError(f"generic: sigma must be >= 0, got {params['sigma']}")
    if not 0.0 <= float(params["border_quantile"]) <= 1.0:
        raise ValueError(
            f"generic: border_quantile must lie in [0, 1], got {params['border_quantile']}"
        )
    if float(params["min_contrast"]) < 0:
        raise ValueError(f"generic: min_contrast must be >= 0, got {params['min_contrast']}")


def _as_float_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    if np.issubdtype(image.dtype, np.floating) and image.min() >= 0 and image.max() <= 1:
        return image.astype(np.float64)
    raise ValueError(f"expected uint8 or float [0, 1] pixels, got {image.dtype}")


def boundary_saliency(
    image: np.ndarray, *, n_segments: int, compactness: float, sigma: float,
    border_quantile: float,
) -> np.ndarray:
    """Per-pixel saliency (Lab distance to the border superpixels), steps 1-3 of the module doc."""
    rgb = _as_float_rgb(image)
    labels = segmentation.slic(
        rgb, n_segments=int(n_segments), compactness=float(compactness), sigma=float(sigma),
        start_label=0, channel_axis=-1,
    )
    flat = labels.ravel()
    n = int(flat.max()) + 1
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    lab = color.rgb2lab(rgb).reshape(-1, 3)
    present = counts > 0  # SLIC can leave label ids unused; keep them out of the statistics
    means = np.zeros((n, 3))
    for c in range(3):
        means[present, c] = np.bincount(flat, weights=lab[:, c], minlength=n)[present]
    means[present] /= counts[present, None]
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    dists = np.linalg.norm(means[:, None, :] - means[None, border, :], axis=-1)
    scores = np.quantile(dists, float(border_quantile), axis=1)
    return scores[labels]


def generic_segmentation(image: np.ndarray, **params: Any) -> np.ndarray:
    """Binary (bool) foreground mask of `image` ((H, W[, 3|4]) uint8 or float in [0, 1]).

    Keyword parameters override `GENERIC_DEFAULTS`; see the module docstring for their meaning.
    Deterministic: SLIC initialises on a grid and nothing else is random.
    """
    unknown = set(params) - set(GENERIC_DEFAULTS)
    if unknown:
        raise TypeError(
            f"unknown generic segmentation parameter(s) {sorted(unknown)}; "
            f"valid: {sorted(GENERIC_DEFAULTS)}"
        )
    p = {**GENERIC_DEFAULTS, **params}
    check_generic_params(p)
    sal = boundary_saliency(
        image, n_segments=p["n_segments"], compactness=p["compactness"], sigma=p["sigma"],
        border_quantile=p["border_quantile"],
    )
    if sal.max() < float(p["min_contrast"]) or sal.max() - sal.min() <= 1e-9:
        return np.zeros(sal.shape, dtype=bool)
    mask = sal > threshold_otsu(sal)
    if p["fill_holes"]:
        mask = ndimage.binary_fill_holes(mask)
    return mask
