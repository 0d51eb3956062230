"""One image-mask pairing and one mask reader, shared by the dataset scanner and the mask tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from align.data.decode import DataError, load_mask, mask_array
from align.data.pairing import index_masks, mask_stem, pair_masks, stem_clashes
from align.masks import list_images, mask_quality_report


def _touch(root: Path, *rels: str, value: int = 255) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), value).save(root / rel)


def test_stems_and_clashes() -> None:
    assert mask_stem("d/c/x.tar.png") == "d/c/x.tar"
    assert stem_clashes(["d/c/x.png", "d/c/y.png", "d/c/x.jpg"]) == {
        "d/c/x": ["d/c/x.jpg", "d/c/x.png"]}


def test_pair_masks_any_extension_in_order(tmp_path: Path) -> None:
    _touch(tmp_path, "d1/c/b.bmp", "d0/c/a.png", "d0/c/.hidden.png", "other/c/a.png")
    assert pair_masks(["d1/c/b.jpg", "d0/c/a.jpg"], tmp_path) == ["d1/c/b.bmp", "d0/c/a.png"]
    # Only the images' domains are read: "other" is never indexed.
    assert index_masks(tmp_path, ["d0"]) == {"d0/c/a": ["d0/c/a.png"]}
    assert set(index_masks(tmp_path)) == {"d0/c/a", "d1/c/b", "other/c/a"}


def test_pair_masks_lists_every_problem_in_one_data_error(tmp_path: Path) -> None:
    _touch(tmp_path, "d/c/two.png", "d/c/two.jpg", "d/c/ok.png")
    rels = ["d/c/ok.jpg", "d/c/none.jpg", "d/c/two.jpg", "d/c/x.jpg", "d/c/x.png"]
    with pytest.raises(DataError) as e:
        pair_masks(rels, tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"mask problems under {tmp_path} (4 of 5 images):")
    assert f"no mask for image d/c/none.jpg: expected {tmp_path / 'd/c/none'}" in msg
    assert "image d/c/two.jpg has 2 candidate masks: ['d/c/two.jpg', 'd/c/two.png']" in msg
    assert "images ['d/c/x.jpg', 'd/c/x.png'] share the mask stem" in msg
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        pair_masks(rels, tmp_path / "missing")


def test_list_images_refuses_images_that_would_share_a_mask(tmp_path: Path) -> None:
    _touch(tmp_path, "d/c/x.png", "d/c/x.jpg", "d/c/y.png")
    with pytest.raises(DataError, match=r"would share one mask.*\n.*d/c/x\.jpg.*d/c/x\.png"):
        list_images(tmp_path)


def test_list_images_follows_symlinked_folders_like_the_training_scan(tmp_path: Path) -> None:
    """Regression: `align masks` skipped the images of a symlinked domain or class folder, which
    training reads, so training then refused the masks folder it had just built."""
    from align.data.folder import scan_domainbed

    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    _touch(images, "d0/a/0.png", "d0/b/0.png", "d1/b/1.png")
    _touch(elsewhere, "d1_a/2.png", "d2/a/3.png", "d2/b/4.png")
    (images / "d1" / "a").symlink_to(elsewhere / "d1_a", target_is_directory=True)
    (images / "d2").symlink_to(elsewhere / "d2", target_is_directory=True)
    expected = ["d0/a/0.png", "d0/b/0.png", "d1/a/2.png", "d1/b/1.png", "d2/a/3.png", "d2/b/4.png"]
    assert list_images(images) == expected
    assert [s.path for s in scan_domainbed(images).samples] == expected


def test_mask_quality_report_pairs_like_training(tmp_path: Path) -> None:
    gt, masks = tmp_path / "gt", tmp_path / "masks"
    _touch(gt, "d/c/a.png", "d/c/b.bmp")
    _touch(masks, "d/c/a.png", "d/c/b.png", "d/c/extra.png")
    report = mask_quality_report(masks, gt)
    assert report["per_image"] == {"d/c/a": 1.0, "d/c/b": 1.0} and report["n_extra"] == 1
    (masks / "d/c/b.png").unlink()
    with pytest.raises(DataError, match=r"no mask for ground-truth mask d/c/b\.bmp"):
        mask_quality_report(masks, gt)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no ground-truth masks"):
        mask_quality_report(masks, tmp_path / "empty")


def test_mask_array_of_each_decoded_mode(tmp_path: Path) -> None:
    Image.new("F", (2, 1), 1.5).save(tmp_path / "f.tiff")
    Image.fromarray(np.array([[0, 200]], np.uint8)).save(tmp_path / "l.png")
    f, l8 = load_mask(tmp_path / "f.tiff"), load_mask(tmp_path / "l.png")
    assert (f.mode, l8.mode) == ("F", "L")
    assert mask_array(f).tolist() == [[255, 255]]  # clipped to 1 first, as training clips
    assert mask_array(l8).dtype == np.uint8 and mask_array(l8).tolist() == [[0, 200]]
    with pytest.raises(ValueError, match="'RGB'"):
        mask_array(Image.new("RGB", (1, 1)))
