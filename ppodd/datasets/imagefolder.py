"""Image folders: `train/<class>/*` and `test/<class>/*`, classes = sorted train folder names.

Images of one square size are read as they are; `data.image_size` resizes images of any size and
aspect (`data.resize`: squash or center_crop). Decoded images are cached (`ppodd.datasets.decode`).
"""

from __future__ import annotations

from pathlib import Path

from ppodd.datasets.decode import ImageFile, load_listing, scan_images
from ppodd.datasets.images import ImageData
from ppodd.errors import DataError


def _resolve_tree(root: Path) -> Path:
    """The folder holding train/ and test/: `root` itself, or its only subfolder that does."""
    if not root.is_dir():
        raise DataError(
            f"data.root: folder {root} does not exist; expected train/<class>/* and test/<class>/*"
        )
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    # An archive often unpacks into one top folder; accept that without making the user append it.
    candidates = [
        p for p in sorted(root.iterdir()) if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()
    ]
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(
        f"data.root: {root} must hold train/<class>/* and test/<class>/* (or one subfolder that does); "
        f"found {len(candidates)} such subfolders"
    )


def _visible_subdirs(folder: Path) -> list[str]:
    """Sorted names of the non-hidden subfolders of `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_tree(tree: Path) -> tuple[list[str], dict[str, list[ImageFile]]]:
    """Class names (sorted train folder names) and, per split, the image files of a tree."""
    classes = _visible_subdirs(tree / "train")
    if not classes:
        raise DataError(f"data.root: {tree / 'train'} has no class folders")
    test_classes = _visible_subdirs(tree / "test")
    if test_classes != classes:
        missing = sorted(set(classes) - set(test_classes))
        extra = sorted(set(test_classes) - set(classes))
        raise DataError(
            f"data.root: train and test class folders differ in {tree}: "
            f"missing from test: {missing or 'none'}; only in test: {extra or 'none'}"
        )
    listing = {
        split: [f for k, c in enumerate(classes) for f in scan_images(tree, f"{split}/{c}", k)]
        for split in ("train", "test")
    }
    return classes, listing


def load_imagefolder(root: Path, cache_dir: Path | None, image_size: int = 0, resize: str = "squash") -> ImageData:
    """Images from train/<class>/* and test/<class>/*, resized to image_size when it is > 0."""
    tree = _resolve_tree(root)
    classes, listing = _list_tree(tree)
    return load_listing("imagefolder", tree, classes, listing, cache_dir, image_size, resize)
