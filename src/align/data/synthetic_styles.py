"""The synthetic benchmark's fixed style table: each domain's look, the shapes and cue colours.

These values were fixed before any method was compared on the benchmark (docs/synthetic.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DomainStyle:
    """How one domain looks. Lengths are fractions of the image side, so styles scale."""

    background: str  # "gradient" | "stripes" | "speckle" | "checker"
    bg_range: tuple[int, int]  # per-channel range of background colours
    period_range: tuple[float, float]  # stripe / checker period; unused by other kinds
    palette: tuple[RGB, ...]  # object colours, drawn independently of the class
    jitter: int  # +/- per-channel jitter added to the palette colour
    noise_std: float  # Gaussian pixel noise (0-255 units) over the whole image
    scale_range: tuple[float, float]  # object circumradius


# The palettes are disjoint in lightness/saturation from their own backgrounds so the
# object always stands out, and none is a pure primary so objects never look like a cue.
STYLES: MappingProxyType[str, DomainStyle] = MappingProxyType({
    "photo": DomainStyle(
        "gradient", (70, 190), (0.0, 0.0),
        ((235, 125, 35), (125, 55, 170), (25, 150, 135), (235, 120, 170),
         (35, 45, 120), (130, 80, 40), (150, 200, 60)),
        20, 3.0, (0.22, 0.34)),
    "sketch": DomainStyle(
        "stripes", (225, 250), (0.07, 0.12),
        ((25, 25, 25), (55, 55, 65), (35, 40, 95), (85, 55, 35), (70, 70, 70)),
        10, 2.0, (0.18, 0.30)),
    "noisy": DomainStyle(
        "speckle", (20, 90), (0.0, 0.0),
        ((215, 215, 215), (180, 140, 215), (225, 180, 130), (130, 190, 225), (200, 220, 160)),
        15, 28.0, (0.20, 0.32)),
    "texture": DomainStyle(
        "checker", (40, 140), (0.06, 0.16),
        ((250, 215, 170), (205, 240, 210), (215, 215, 250), (250, 250, 225), (245, 200, 215)),
        10, 6.0, (0.26, 0.40)),
})

#: Shapes the benchmark's classes are drawn from (SynthConfig.classes).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")

#: Shapes of the upstream (pre-training) task only; disjoint from SHAPES, so a pretrained
#: backbone has never been trained to tell the benchmark's classes apart.
UPSTREAM_SHAPES: tuple[str, ...] = (
    "ellipse", "semicircle", "crescent", "pentagon", "hexagon", "diamond",
    "arrow", "tee", "ell", "chevron", "heart", "trapezoid",
)
assert not set(SHAPES) & set(UPSTREAM_SHAPES)

# Backgrounds the upstream task adds to the benchmark's four domain styles, for breadth (as
# ImageNet holds far more kinds of scene than any benchmark). Not benchmark domains. Their
# palettes mix dark, light and vivid colours, so that some colour stands out on any
# background.
_BROAD_PALETTE = ((20, 20, 20), (240, 240, 240), (220, 60, 40), (40, 90, 200),
                  (240, 200, 40), (40, 160, 80), (150, 60, 170), (120, 120, 120))
UPSTREAM_STYLES: MappingProxyType[str, DomainStyle] = MappingProxyType({
    "plain": DomainStyle("flat", (30, 225), (0.0, 0.0), _BROAD_PALETTE, 15, 4.0, (0.20, 0.36)),
    "blobs": DomainStyle("blobs", (30, 225), (0.0, 0.0), _BROAD_PALETTE, 15, 6.0, (0.20, 0.36)),
})

#: Cue colours, saturated so a small CNN finds them at once. K = number of classes.
CUE_COLORS: tuple[tuple[str, RGB], ...] = (
    ("red", (255, 0, 0)), ("green", (0, 220, 0)), ("blue", (0, 0, 255)),
    ("yellow", (255, 230, 0)), ("magenta", (255, 0, 255)), ("cyan", (0, 230, 230)),
)
