"""Known DomainBed datasets: the domain and class folder names a download must contain.

`scan_domainbed(..., preset=name)` checks a folder against one of these, so a partial download or
a renamed folder is caught before training instead of silently shifting labels or environments.
Domain order inside a `DomainFolder` is always the sorted folder order, which for both presets
matches DomainBed's `ENVIRONMENTS` order (so "test env 0" means the same domain as in DomainBed).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Expected layout of one dataset.

    Args:
        name: preset key ("vlcs", "terra_incognita").
        domains: domain folder names, sorted.
        classes: class folder names, sorted (label i is classes[i]).
        url: where the data comes from (informational; this package never downloads).
    """

    name: str
    domains: list[str]
    classes: list[str]
    url: str | None = None


PRESETS: dict[str, Preset] = {
    "vlcs": Preset(
        name="vlcs",
        domains=["Caltech101", "LabelMe", "SUN09", "VOC2007"],
        classes=["bird", "car", "chair", "dog", "person"],
        # The archive DomainBed's download script fetches (already in DomainBed layout).
        url="https://drive.google.com/uc?id=1skwblH1_okBwxWxmRsp9_qi15hyPpxg8",
    ),
    "terra_incognita": Preset(
        name="terra_incognita",
        domains=["location_100", "location_38", "location_43", "location_46"],
        classes=[
            "bird", "bobcat", "cat", "coyote", "dog",
            "empty", "opossum", "rabbit", "raccoon", "squirrel",
        ],
        # Caltech Camera Traps; DomainBed's download script builds the location folders from it.
        url="https://lila.science/datasets/caltech-camera-traps",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; a `KeyError` listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise KeyError(f"unknown dataset preset {name!r}; known: {known}") from None
