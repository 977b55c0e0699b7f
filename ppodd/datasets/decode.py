"""Image files decoded into one uint8 tensor, resized on the way when asked, and the decoded-image
cache that the folder loaders (image folders, Tiny-ImageNet, CUB) share.

A loader lists its files with their labels; `load_listing` decodes them once and caches the result
in the cache folder, keyed by the listing (names, labels, sizes, times) and the resize settings, so
a later run skips decoding. Images become RGB whatever their mode (grayscale, palette, RGBA: the
alpha channel is dropped, as PIL's `convert("RGB")` and torchvision's folder loader do).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ppodd.datasets.images import ImageData, content_fingerprint, from_uint8, save_cached
from ppodd.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
RESIZE_MODES = ("squash", "center_crop")
# Bump when the decoded-image cache layout changes.
_CACHE_FORMAT = 1
_JPEG_MAGIC = b"\xff\xd8\xff"
_DECODE_BATCH = 4096


class ImageFile(NamedTuple):
    """One listed image, with what the decoded-image cache key needs."""

    path: Path
    rel: str  # path relative to the data set's folder, "/"-separated, e.g. "train/cat/0001.jpg"
    label: int
    size: int
    mtime_ns: int


def scan_images(root: Path, folder: str, label: int) -> list[ImageFile]:
    """Image files under root/folder (any depth), sorted by path; hidden names skipped.

    os.scandir rather than Path.rglob: it lists and stats 60k files about four times faster.
    """
    base = root / folder
    found: list[tuple[str, int, int]] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(base / rel) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                sub = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir():
                    pending.append(sub)
                elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    st = entry.stat()
                    found.append((sub, st.st_size, st.st_mtime_ns))
    if not found:
        raise DataError(f"data.root: class folder {base} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return [ImageFile(base / rel, f"{folder}/{rel}", label, size, mtime) for rel, size, mtime in sorted(found)]


def listed_image(root: Path, rel: str, label: int, listed_in: Path) -> ImageFile:
    """The image root/rel that the file `listed_in` names, or DataError when it is not there."""
    path = root / rel
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"data.root: image {path} listed in {listed_in} is missing") from None
    return ImageFile(path, rel, label, st.st_size, st.st_mtime_ns)


def _to_rgb(im: Any) -> Any:
    """A PIL image as RGB; a palette with a transparent colour goes through RGBA, as PIL asks."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _resized(im: Any, size: int, resize: str) -> Any:
    """`im` as size × size: both sides scaled ("squash") or its central square scaled ("center_crop").

    Bilinear with PIL's antialiasing, which is what torchvision's Resize does to a PIL image, so
    squash gives CUB the pixels of the PoDD reference's preprocessing.
    """
    from PIL import Image

    width, height = im.size
    if (width, height) == (size, size):
        return im
    box = (0, 0, width, height)
    if resize == "center_crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    return im.resize((size, size), Image.Resampling.BILINEAR, box=box)


def _decode_one(path: Path, data: bytes, size: int = 0, resize: str = "squash") -> Tensor:
    """One image as uint8 (3, h, w), resized to size × size when size > 0; PIL reads every format."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = _to_rgb(im)
            arr = np.asarray(_resized(im, size, resize) if size else im)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"data.root: cannot decode image {path} ({err})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _decode_jpeg_batch(raw: Sequence[bytes]) -> list[Tensor] | None:
    """JPEG bytes decoded together as uint8 (3, h, w) each, or None where the batch path fails.

    Batched libjpeg-turbo decoding is about twice as fast as PIL on 32 × 32 JPEGs. torchvision
    0.29 marks its decoders deprecated in favour of torchcodec; the pinned version still has them,
    and a later one without them falls back to PIL, which gives identical pixels.
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return decode_jpeg(
                [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw], mode=ImageReadMode.RGB
            )
        except RuntimeError:
            return None  # one bad file fails the batch; the per-file path names it


def _decode_as_they_are(paths: Sequence[Path]) -> Tensor:
    """All images as uint8 (n, 3, a, a); every image must be a × a with one a."""
    out: Tensor | None = None
    hint = "; set data.image_size to resize images"
    for start in range(0, len(paths), _DECODE_BATCH):
        chunk = paths[start:start + _DECODE_BATCH]
        raw = [p.read_bytes() for p in chunk]
        decoded: list[Tensor | None] = [None] * len(chunk)
        jpeg_idx = [i for i, b in enumerate(raw) if b.startswith(_JPEG_MAGIC)]
        batch = _decode_jpeg_batch([raw[i] for i in jpeg_idx]) if jpeg_idx else None
        if batch is not None:
            for i, img in zip(jpeg_idx, batch):
                decoded[i] = img
        for i, (path, img) in enumerate(zip(chunk, decoded)):
            if img is None:
                img = decoded[i] = _decode_one(path, raw[i])
            if out is None:
                side = img.shape[-1]
                if img.shape[-2] != side:
                    raise DataError(f"data.root: image {path} is {img.shape[-1]}x{img.shape[-2]}, not square{hint}")
                out = torch.empty((len(paths), 3, side, side), dtype=torch.uint8)
            if tuple(img.shape[-2:]) != tuple(out.shape[-2:]):
                raise DataError(
                    f"data.root: image {path} is {img.shape[-1]}x{img.shape[-2]}, "
                    f"expected {out.shape[-1]}x{out.shape[-2]} like the first image{hint}"
                )
        assert out is not None
        out[start:start + len(chunk)] = torch.stack(decoded)  # type: ignore[arg-type]
    assert out is not None
    return out


def decode_images(paths: Sequence[Path], size: int = 0, resize: str = "squash") -> Tensor:
    """The images at `paths` as uint8 (n, 3, a, a): resized to a = size when size > 0, else as
    they are, which must be one square size."""
    if not size:
        return _decode_as_they_are(paths)
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        out[i] = _decode_one(path, path.read_bytes(), size, resize)
    return out


def listing_key(kind: str, listing: dict[str, list[ImageFile]], extra: Sequence[str] = ()) -> str:
    """Digest of the relative paths, labels, sizes and mtimes of all files, then the `extra` lines:
    the decode-cache key."""
    digest = hashlib.sha256(f"{kind}-cache-v{_CACHE_FORMAT}\0".encode())
    for split in ("train", "test"):
        for f in listing[split]:
            digest.update(f"{f.rel}|{f.label}|{f.size}|{f.mtime_ns}\n".encode())
    for line in extra:
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()[:16]


def _read_decode_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The cached decoded images if `path` holds a complete entry for `key`, else None."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable cache file is rebuilt, never trusted
        return None
    needed = {"format", "key", "train_x", "train_y", "test_x", "test_y", "class_names", "fingerprint"}
    if not isinstance(entry, dict) or not needed <= entry.keys():
        return None
    if entry["format"] != _CACHE_FORMAT or entry["key"] != key:
        return None
    for x, y in ((entry["train_x"], entry["train_y"]), (entry["test_x"], entry["test_y"])):
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[0] != len(y):
            return None
    return entry


def load_listing(
    kind: str, where: Path, classes: Sequence[str], listing: dict[str, list[ImageFile]],
    cache_dir: Path | None, size: int = 0, resize: str = "squash", key_extra: Sequence[str] = (),
) -> ImageData:
    """ImageData of data set `kind` from its listed train and test files, decoded once and cached.

    `where` (the data set's folder) is for messages. The cache key covers the listing, `key_extra`
    (what else shapes the result, such as class names read from a file) and, when images are
    resized, size and resize; with size 0 the key is the listing's alone, as before resizing existed.
    """
    resize_lines = (f"resize|{size}|{resize}",) if size else ()
    key = listing_key(kind, listing, (*key_extra, *resize_lines))
    cache_path = cache_dir / f"{kind}-{key}.pt" if cache_dir is not None else None
    entry = _read_decode_cache(cache_path, key) if cache_path is not None else None
    if entry is None:
        train_u8 = decode_images([f.path for f in listing["train"]], size, resize)
        test_u8 = decode_images([f.path for f in listing["test"]], size, resize)
        if train_u8.shape[-1] != test_u8.shape[-1]:
            raise DataError(
                f"data.root: train images are {train_u8.shape[-1]} px but test images "
                f"{test_u8.shape[-1]} px in {where}; set data.image_size to resize them"
            )
        train_y = torch.tensor([f.label for f in listing["train"]], dtype=torch.int64)
        test_y = torch.tensor([f.label for f in listing["test"]], dtype=torch.int64)
        fp = content_fingerprint(kind, train_u8, train_y, test_u8, test_y, classes)
        entry = {
            "format": _CACHE_FORMAT, "key": key, "train_x": train_u8, "train_y": train_y,
            "test_x": test_u8, "test_y": test_y, "class_names": list(classes), "fingerprint": fp,
        }
        if cache_path is not None:
            save_cached(entry, cache_path)
    return from_uint8(
        entry["train_x"], entry["train_y"], entry["test_x"], entry["test_y"],
        entry["class_names"], kind, entry["fingerprint"],
    )
