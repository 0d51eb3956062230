"""Known DomainBed datasets: the domain and class folder names and image counts a copy must have.

`scan_domainbed(..., preset=name)` checks a folder's domain and class names against one of these,
so a partial download or a renamed folder is caught before training instead of silently shifting
labels or environments; `align check` (`align.data.check`) also compares the image counts with the
known releases below, so a folder with half of one class's images missing fails too.
Domain order inside a `DomainFolder` is always the sorted folder order, which for every preset
matches DomainBed's `ENVIRONMENTS` order (so "test env 0" means the same domain as in DomainBed).

Where the counts come from (per release, in `Release.source`):
- VLCS: per class, from DomainBed's `domainbed/misc/vlcs_files.txt` (the file list its download
  script once built VLCS from); the archive DomainBed downloads has the same per-domain totals.
- PACS: per domain, from the PACS paper (Li et al. 2017) and DomainBed's tables.
- OfficeHome: per domain, from the Office-Home paper (Venkateswara et al. 2017).
- TerraIncognita: two releases circulate. 24,788 images is the version of DomainBed's and later
  papers (per domain as MIRO's authors list it: khanrc/miro issue 9); 24,330 images is what
  DomainBed's download script produced from 2021 to 2024 (it read `caltech_images_20210113.json`).
  The per-domain counts of the 24,330 release are published nowhere we could find, so that release
  is recognised by its total alone (and `align check` says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Release:
    """One known release of a dataset, identified by its image counts.

    Args:
        name: how messages name it ("24,788 (the papers')").
        total: number of images.
        per_domain: images per domain folder; None where only the total is known.
        per_class: images per domain and class; None where not known.
        source: where the counts come from.
    """

    name: str
    total: int
    per_domain: dict[str, int] | None = None
    per_class: dict[str, dict[str, int]] | None = None
    source: str = ""

    @property
    def checked(self) -> str:
        """How closely a folder is compared with this release."""
        return ("per class" if self.per_class is not None else
                "per domain" if self.per_domain is not None else "total only")

    def __post_init__(self) -> None:
        # The tables are typed in by hand: refuse one whose parts do not add up.
        if self.per_class is not None:
            sums = {d: sum(c.values()) for d, c in self.per_class.items()}
            if self.per_domain is not None and sums != self.per_domain:
                raise ValueError(f"release {self.name!r}: per-class counts sum to {sums}, "
                                 f"not to the per-domain counts {self.per_domain}")
        if self.per_domain is not None and sum(self.per_domain.values()) != self.total:
            raise ValueError(f"release {self.name!r}: per-domain counts sum to "
                             f"{sum(self.per_domain.values())}, not to the total {self.total}")


@dataclass(frozen=True)
class Preset:
    """Expected layout of one dataset.

    Args:
        name: preset key ("vlcs", "terra_incognita", "pacs", "office_home").
        domains: domain folder names, sorted.
        classes: class folder names, sorted (label i is classes[i]).
        url: the dataset's home page (the archives `align prepare` fetches are listed with their
            licences in `align.data.prepare` and docs/datasets.md).
        releases: the known releases, by image counts; a folder must match one of them.
    """

    name: str
    domains: list[str]
    classes: list[str]
    url: str | None = None
    releases: tuple[Release, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for r in self.releases:
            if r.per_domain is not None and sorted(r.per_domain) != sorted(self.domains):
                raise ValueError(f"preset {self.name!r}, release {r.name!r}: domains "
                                 f"{sorted(r.per_domain)} are not the preset's {self.domains}")


_VLCS_PER_CLASS = {  # DomainBed's domainbed/misc/vlcs_files.txt, counted per destination folder
    "Caltech101": {"bird": 237, "car": 123, "chair": 118, "dog": 67, "person": 870},
    "LabelMe": {"bird": 80, "car": 1209, "chair": 88, "dog": 42, "person": 1237},
    "SUN09": {"bird": 20, "car": 932, "chair": 1036, "dog": 30, "person": 1264},
    "VOC2007": {"bird": 330, "car": 699, "chair": 428, "dog": 420, "person": 1499},
}

_OFFICE_HOME_CLASSES = [
    "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator",
    "Calendar", "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp",
    "Drill", "Eraser", "Exit_Sign", "Fan", "File_Cabinet", "Flipflops", "Flowers", "Folder", "Fork",
    "Glasses", "Hammer", "Helmet", "Kettle", "Keyboard", "Knives", "Lamp_Shade", "Laptop", "Marker",
    "Monitor", "Mop", "Mouse", "Mug", "Notebook", "Oven", "Pan", "Paper_Clip", "Pen", "Pencil",
    "Postit_Notes", "Printer", "Push_Pin", "Radio", "Refrigerator", "Ruler", "Scissors",
    "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda", "Speaker", "Spoon", "TV", "Table",
    "Telephone", "ToothBrush", "Toys", "Trash_Can", "Webcam",
]

PRESETS: dict[str, Preset] = {
    "vlcs": Preset(
        name="vlcs",
        domains=["Caltech101", "LabelMe", "SUN09", "VOC2007"],
        classes=["bird", "car", "chair", "dog", "person"],
        url="http://www.eecs.qmul.ac.uk/~dl307/project_iccv2017",
        releases=(Release(
            "DomainBed's VLCS (10,729)", 10_729,
            per_domain={d: sum(c.values()) for d, c in _VLCS_PER_CLASS.items()},
            per_class=_VLCS_PER_CLASS, source="DomainBed domainbed/misc/vlcs_files.txt"),),
    ),
    "terra_incognita": Preset(
        name="terra_incognita",
        domains=["location_100", "location_38", "location_43", "location_46"],
        classes=[
            "bird", "bobcat", "cat", "coyote", "dog",
            "empty", "opossum", "rabbit", "raccoon", "squirrel",
        ],
        # Caltech Camera Traps; the location folders are built from its images and annotations.
        url="https://lila.science/datasets/caltech-camera-traps",
        releases=(
            Release("24,788 (the papers')", 24_788,
                    per_domain={"location_100": 4_879, "location_38": 9_767,
                                "location_43": 4_020, "location_46": 6_122},
                    source="DomainBed / SWAD / MIRO papers; per domain: khanrc/miro issue 9"),
            Release("24,330 (DomainBed's download script, 2021-2024)", 24_330,
                    source="DomainBed issue 58 and khanrc/miro issue 9 (total only)"),
        ),
    ),
    "pacs": Preset(
        name="pacs",
        domains=["art_painting", "cartoon", "photo", "sketch"],
        classes=["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"],
        url="https://sketchx.eecs.qmul.ac.uk/downloads/",
        releases=(Release(
            "PACS (9,991)", 9_991,
            per_domain={"art_painting": 2_048, "cartoon": 2_344, "photo": 1_670, "sketch": 3_929},
            source="Li et al. 2017, Deeper, Broader and Artier Domain Generalization"),),
    ),
    "office_home": Preset(
        name="office_home",
        domains=["Art", "Clipart", "Product", "Real World"],
        classes=sorted(_OFFICE_HOME_CLASSES),
        url="https://www.hemanthdv.org/officeHomeDataset.html",
        releases=(Release(
            "Office-Home (15,588)", 15_588,
            per_domain={"Art": 2_427, "Clipart": 4_365, "Product": 4_439, "Real World": 4_357},
            source="Venkateswara et al. 2017, Deep Hashing Network for Unsupervised Domain "
                   "Adaptation"),),
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; a `KeyError` listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise KeyError(f"unknown dataset preset {name!r}; known: {known}") from None
