"""CUB-200-2011 as `CUB_200_2011.tgz` unpacks: no rearranging needed.

    classes.txt                  class id, folder name ("1 001.Black_footed_Albatross")
    images.txt                   image id, path under images/
    image_class_labels.txt       image id, class id
    train_test_split.txt         image id, 1 (train) or 0 (test): the official split
    images/<class>/*.jpg         images of varying size

Images are resized to 32 × 32 by default, both sides scaled and the aspect not kept, as the PoDD
reference does; `data.image_size` and `data.resize` choose otherwise. Labels follow the class ids
in ascending order, and images the image ids. Class names are the folder names made readable
("Black footed Albatross").
"""

from __future__ import annotations

import re
from pathlib import Path

from ppodd.datasets.decode import ImageFile, listed_image, load_listing
from ppodd.datasets.images import ImageData
from ppodd.errors import DataError

# PoDD's resolution for CUB.
DEFAULT_SIZE = 32
LAYOUT = "classes.txt, images.txt, image_class_labels.txt, train_test_split.txt and images/"


def _resolve(root: Path) -> Path:
    """The folder holding images.txt: `root` itself, or its only subfolder that does."""
    if (root / "images.txt").is_file():
        return root
    candidates = [p for p in sorted(root.iterdir()) if (p / "images.txt").is_file()] if root.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(f"data.root: {root / 'images.txt'} is missing; expected CUB-200-2011 as "
                    f"CUB_200_2011.tgz unpacks ({LAYOUT})")


def _table(path: Path) -> dict[int, str]:
    """The `id value` lines of a file of the layout as {id: value}, or DataError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"data.root: {path} is missing; expected CUB-200-2011 ({LAYOUT})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"data.root: cannot read {path} ({err})") from None
    table: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit():
            raise DataError(f"data.root: {path} line {number} is not 'id value': {line[:80]!r}")
        table[int(fields[0])] = fields[1].strip()
    return table


def _readable(folder: str) -> str:
    """'001.Black_footed_Albatross' as 'Black footed Albatross'."""
    return re.sub(r"^\d+\.", "", folder).replace("_", " ").strip()


def _classes(tree: Path) -> tuple[dict[int, int], list[str]]:
    """{class id: label} with labels in ascending id order, and the readable names in label order."""
    classes = _table(tree / "classes.txt")
    if not classes:
        raise DataError(f"data.root: {tree / 'classes.txt'} lists no classes")
    ids = sorted(classes)
    return {c: k for k, c in enumerate(ids)}, [_readable(classes[c]) for c in ids]


def _listing(tree: Path, labels: dict[int, int], names: list[str]) -> dict[str, list[ImageFile]]:
    """The train and test image files of the official split, by image id."""
    images_txt = tree / "images.txt"
    paths, classes, split = _table(images_txt), _table(tree / "image_class_labels.txt"), _table(tree / "train_test_split.txt")
    listing: dict[str, list[ImageFile]] = {"train": [], "test": []}
    for image_id in sorted(paths):
        for table, name in ((classes, "image_class_labels.txt"), (split, "train_test_split.txt")):
            if image_id not in table:
                raise DataError(f"data.root: {tree / name} has no line for image {image_id} ({paths[image_id]})")
        class_id = int(classes[image_id]) if classes[image_id].isdigit() else None
        if class_id not in labels:
            raise DataError(f"data.root: {tree / 'image_class_labels.txt'} gives image {image_id} class "
                            f"{classes[image_id]!r}, which classes.txt does not list")
        if split[image_id] not in ("0", "1"):
            raise DataError(f"data.root: {tree / 'train_test_split.txt'} gives image {image_id} "
                            f"{split[image_id]!r}; expected 1 (train) or 0 (test)")
        part = "train" if split[image_id] == "1" else "test"
        listing[part].append(listed_image(tree, f"images/{paths[image_id]}", labels[class_id], images_txt))
    present = {f.label for f in listing["train"]}
    missing = [names[k] for k in range(len(names)) if k not in present]
    if missing:
        raise DataError(f"data.root: {len(missing)} class(es) of {tree / 'classes.txt'} have no training "
                        f"image in {tree / 'train_test_split.txt'}, e.g. {missing[0]!r}")
    return listing


def load_cub200(root: Path, cache_dir: Path | None, image_size: int = 0, resize: str = "squash") -> ImageData:
    """CUB-200-2011's official train and test splits at image_size (0: PoDD's 32) pixels a side."""
    tree = _resolve(root)
    labels, names = _classes(tree)
    listing = _listing(tree, labels, names)
    return load_listing("cub200", tree, names, listing, cache_dir, image_size or DEFAULT_SIZE, resize,
                        key_extra=names)


def read_class_names(root: Path) -> list[str]:
    """The readable class names in label order, without reading any image (for the PoCO order)."""
    return _classes(_resolve(root))[1]
