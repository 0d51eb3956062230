"""TerraIncognita as DomainBed builds it from Caltech Camera Traps (CCT) images and annotations.

DomainBed's download script (`download_terra_incognita`) keeps the images of four camera
locations (38, 43, 46, 100) and ten categories, one folder per location and category. The
annotations are COCO Camera Traps JSON: `images` (id, file_name, location), `annotations`
(image_id, category_id), `categories` (id, name). Its releases of the annotations differ in
details this build absorbs: one file or five split files, locations as numbers or as strings.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path, PurePosixPath

from align.data.decode import DataError
from align.data.presets import Preset

#: The two archives the build reads (names as on the host, and as `--archive` matches them).
IMAGES = "eccv_18_all_images_sm.tar.gz"
ANNOTATIONS = "eccv_18_annotations.tar.gz"


def build_terra_incognita(extracted: dict[str, Path], out: Path, preset: Preset) -> None:
    """DomainBed's TerraIncognita from Caltech Camera Traps: every image of locations 38, 43, 46
    and 100 goes to `location_<L>/<category>/<file_name>` for each of its annotations whose
    category is one of the preset's 10 classes (an image annotated twice lands in both class
    folders, as in DomainBed); other locations and categories are left out. The annotations are
    the union of every COCO-Camera-Traps JSON file in the annotations archive."""
    images_root = extracted[IMAGES]
    while len(entries := list(os.scandir(images_root))) == 1 and entries[0].is_dir():
        images_root = Path(entries[0].path)  # eccv_18_all_images_sm/
    images, by_image = _read_annotations(extracted[ANNOTATIONS], set(preset.classes))
    locations = {d.removeprefix("location_"): d for d in preset.domains}
    missing: list[str] = []
    for image_id, location, file_name in images:
        domain = locations.get(location)
        if domain is None or not by_image.get(image_id):
            continue
        name = _safe_relative(file_name, ANNOTATIONS)
        src = images_root / name
        if not src.is_file():
            missing.append(name)
            continue
        for cls in sorted(by_image[image_id]):
            _place(src, out / domain / cls / name)
    if missing:
        raise DataError(f"{IMAGES}: {len(missing)} annotated image(s) are not in the "
                        f"archive, e.g. {missing[:5]}; is it the complete file?")
    if not out.is_dir():
        raise DataError(f"{ANNOTATIONS}: no image of locations {sorted(locations)} with "
                        f"a category in {preset.classes}")


def _read_annotations(folder: Path, classes: set[str]) -> tuple[list[tuple], dict]:
    """([(image id, location, file name)], image id -> set of kept class names) over every JSON
    file under `folder`. Locations are compared as strings: the JSON releases differ (38 / "38")."""
    files = sorted(p for p in folder.rglob("*.json") if not p.name.startswith("."))
    if not files:
        raise DataError(f"{ANNOTATIONS}: no .json annotation file in the archive")
    images, annotations, categories = [], [], {}
    for f in files:
        try:
            data = json.loads(f.read_text())
            images += [(im["id"], str(im["location"]), im["file_name"]) for im in data["images"]]
            annotations += [(a["image_id"], a["category_id"]) for a in data["annotations"]]
            categories.update({c["id"]: c["name"] for c in data["categories"]})
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{f}: not a COCO Camera Traps annotation file (missing or bad "
                            f"{e!r})") from None
    by_image: dict = defaultdict(set)
    for image_id, category in annotations:
        if categories.get(category) in classes:
            by_image[image_id].add(categories[category])
    return images, by_image


def _safe_relative(name: str, label: str) -> str:
    """`name` if it is a relative path without `..` (annotation files are input, not code)."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise DataError(f"{label}: refusing the image file name {name!r}")
    return p.as_posix()


def _place(src: Path, dst: Path) -> None:
    """A hard link (no copy of the bytes) where the filesystem allows, else a copy."""
    if dst.exists():  # listed twice in the annotations
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
