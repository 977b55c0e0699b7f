"""Tiny-ImageNet-200 as `tiny-imagenet-200.zip` unpacks: no rearranging needed.

    wnids.txt                      the classes (WordNet ids), one a line
    words.txt                      optional: wnid <tab> readable names, comma-separated
    train/<wnid>/images/*.JPEG     training images, 64 × 64
    val/images/*.JPEG              validation images: the test split, as in the PoDD reference
    val/val_annotations.txt        file <tab> wnid <tab> bounding box (ignored)

Labels follow the sorted wnids, the order torchvision's ImageFolder gives the reference, and
images are ordered within a class by file name, so the arrays are the reference's. A `val/` that
the reference's helper already rearranged into `val/<wnid>/images/` is read too. The unlabelled
`test/` folder is not used.
"""

from __future__ import annotations

from pathlib import Path

from ppodd.datasets.decode import ImageFile, listed_image, load_listing, scan_images
from ppodd.datasets.images import ImageData
from ppodd.errors import DataError

LAYOUT = "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"


def _resolve(root: Path) -> Path:
    """The folder holding wnids.txt: `root` itself, or its only subfolder that does."""
    if (root / "wnids.txt").is_file():
        return root
    candidates = [p for p in sorted(root.iterdir()) if (p / "wnids.txt").is_file()] if root.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(f"data.root: {root / 'wnids.txt'} is missing; expected Tiny-ImageNet-200 as "
                    f"tiny-imagenet-200.zip unpacks ({LAYOUT})")


def _lines(path: Path) -> list[str]:
    """The non-blank lines of a text file of the layout, or DataError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"data.root: {path} is missing; expected Tiny-ImageNet-200 ({LAYOUT})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"data.root: cannot read {path} ({err})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _class_names(tree: Path, wnids: list[str]) -> list[str]:
    """A readable name per wnid: the first of its names in words.txt, else the wnid itself.

    A name that two classes share (ImageNet has two "crane"s) gets its wnid in brackets.
    """
    words: dict[str, str] = {}
    if (tree / "words.txt").is_file():
        for line in _lines(tree / "words.txt"):
            wnid, _, names = line.partition("\t")
            words[wnid.strip()] = names.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]


def _wnids(root: Path) -> tuple[Path, list[str]]:
    """The data set's folder and its sorted wnids."""
    tree = _resolve(root)
    wnids = sorted(set(_lines(tree / "wnids.txt")))
    if not wnids:
        raise DataError(f"data.root: {tree / 'wnids.txt'} lists no classes")
    return tree, wnids


def _train_files(tree: Path, wnids: list[str]) -> list[ImageFile]:
    files = []
    for label, wnid in enumerate(wnids):
        if not (tree / "train" / wnid).is_dir():
            raise DataError(f"data.root: {tree / 'train' / wnid} is missing; wnids.txt lists {wnid}")
        files += scan_images(tree, f"train/{wnid}", label)
    return files


def _val_files(tree: Path, labels: dict[str, int]) -> list[ImageFile]:
    """The validation images of val_annotations.txt with their labels, by label then file name."""
    annotations = tree / "val" / "val_annotations.txt"
    flat = (tree / "val" / "images").is_dir()
    entries = []
    for number, line in enumerate(_lines(annotations), 1):
        fields = line.split()
        if len(fields) < 2:
            raise DataError(f"data.root: {annotations} line {number} is not 'file<tab>wnid<tab>box': {line[:80]!r}")
        name, wnid = fields[0], fields[1]
        if wnid not in labels:
            raise DataError(f"data.root: {annotations} line {number} names class {wnid}, which wnids.txt does not list")
        entries.append((labels[wnid], name, f"val/images/{name}" if flat else f"val/{wnid}/images/{name}"))
    if not entries:
        raise DataError(f"data.root: {annotations} lists no images")
    return [listed_image(tree, rel, label, annotations) for label, _, rel in sorted(entries)]


def load_tinyimagenet(root: Path, cache_dir: Path | None, image_size: int = 0, resize: str = "squash") -> ImageData:
    """Tiny-ImageNet-200's train split and its val split as the test split; 64 × 64 unless
    image_size (> 0) resizes them."""
    tree, wnids = _wnids(root)
    listing = {"train": _train_files(tree, wnids), "test": _val_files(tree, {w: k for k, w in enumerate(wnids)})}
    names = _class_names(tree, wnids)
    return load_listing("tinyimagenet", tree, names, listing, cache_dir, image_size, resize, key_extra=names)


def read_class_names(root: Path) -> list[str]:
    """The readable class names in label order, without reading any image (for the PoCO order)."""
    return _class_names(*_wnids(root))
