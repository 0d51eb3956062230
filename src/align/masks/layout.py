"""The on-disk layout of image and mask trees, and writing single masks.

Images follow the DomainBed layout ``ROOT/<domain>/<class>/<image>``. A mask folder mirrors it:
the mask of ``ROOT/d/c/x.jpg`` is ``MASKS/d/c/x.<any image extension>`` (one per image), an
8-bit greyscale image (mode ``L``) whose values 0..255 mean "not object" .. "object"; soft values
in between are allowed. Masks that *we* write always use ``.png`` (lossless, so a binary mask
stays binary). Pairing images with masks is `align.data.pairing`'s, reading a mask
`align.data.decode.load_mask`'s (then `mask_array`), as for training.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from align.data.decode import DataError, listing
from align.data.pairing import mask_stem, stem_clashes

# Depth of an image below the root: <domain>/<class>/<image>.
LAYOUT_DEPTH = 3


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def list_images(root: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of every image at ``<domain>/<class>/<image>`` below `root`, sorted.

    Hidden files and folders (``.ipynb_checkpoints``, our own ``.tmp`` folders) are skipped, and
    so are images at other depths (a ``preview.png`` next to the domains is not a sample);
    symlinked folders are followed.
    Raises if `root` is not a folder or holds no image, and (a `DataError`) if two images would
    share one mask path (``x.jpg`` and ``x.png`` in one class folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    rels: list[str] = []
    # Symlinked domain and class folders are followed, as the training scan and the mask pairing
    # follow them: else their images get no mask here and training then refuses the folder.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        # Pruning in place stops os.walk from descending into hidden folders at all, and below
        # the class folders (nothing is listed there; a symlink loop there is never entered).
        deeper = len(rel_dir.parts) < LAYOUT_DEPTH - 1
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if deeper else []
        if len(rel_dir.parts) != LAYOUT_DEPTH - 1:
            continue
        rels.extend(
            str(rel_dir / f) for f in filenames if not f.startswith(".") and _is_image(f)
        )
    if not rels:
        raise FileNotFoundError(
            f"no images found in {root}; expected <domain>/<class>/<image> with an extension in "
            f"{', '.join(IMG_EXTENSIONS)}"
        )
    rels.sort()
    clashes = stem_clashes(rels)
    if clashes:
        raise DataError(f"{root}: images that would share one mask; rename all but one of each:"
                        + listing([f"{found} -> {stem}.png" for stem, found in clashes.items()]))
    return rels


def mask_rel_path(rel: str) -> str:
    """Where the mask of image `rel` goes in a folder we write: same path, ``.png``."""
    return mask_stem(rel) + ".png"


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image, read from its header only."""
    with Image.open(path) as im:
        return im.height, im.width


def to_uint8_mask(mask: np.ndarray) -> np.ndarray:
    """bool -> 0/255, float in [0, 1] -> rounded 0..255, uint8 unchanged."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8) * 255
    if mask.dtype == np.uint8:
        return mask
    if np.issubdtype(mask.dtype, np.floating):
        if mask.size and (mask.min() < 0.0 or mask.max() > 1.0):
            raise ValueError(
                f"float mask values must lie in [0, 1], got {mask.min()}..{mask.max()}"
            )
        return np.rint(mask * 255.0).astype(np.uint8)
    raise TypeError(f"cannot store a mask of dtype {mask.dtype}; use bool, uint8 or float")


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a mask as an 8-bit greyscale PNG (parents created)."""
    path = Path(path)
    if np.ndim(mask) != 2:
        raise ValueError(f"mask for {path} must be 2-D (H, W), got shape {np.shape(mask)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8_mask(mask)).save(path, format="PNG")


def image_seed(seed: int, rel: str) -> int:
    """A per-image seed from (run seed, relative path).

    SHA-256 rather than ``hash()``: Python salts string hashes per process, and the same image
    must get the same degradation in every process and every run.
    """
    digest = hashlib.sha256(f"{int(seed)}\0{rel}".encode()).digest()
    return int.from_bytes(digest[:8], "little")
