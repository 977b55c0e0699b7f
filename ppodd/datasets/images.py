"""Real image sets as tensors: CIFAR through torchvision, image folders, and a synthetic set (§1).

Every loader returns an `ImageData` with images as float32 in [0, 1], shape (n, 3, a, a), and hard
class-index labels. No mean/std normalisation is applied here: with ZCA on, the whitening in
`ppodd.datasets.zca` is the only preprocessing (§1).

`ImageData.fingerprint` identifies the decoded contents (pixels, labels, class names) plus the
kind of source, not the folder they were read from, so moving or re-extracting a data set keeps
its ZCA cache valid.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ppodd.errors import ConfigError, DataError

DATASET_NAMES = ("cifar10", "cifar100", "imagefolder", "synthetic")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Bump when the decoded-image cache layout or the synthetic generator changes.
_CACHE_FORMAT = 1
_SYNTHETIC_VERSION = 1
_JPEG_MAGIC = b"\xff\xd8\xff"
_DECODE_BATCH = 4096
# Synthetic image = sigmoid(w_t·class template + w_d·distractor + w_n·noise); see make_synthetic.
_TEMPLATE_WEIGHT = 0.5
_DISTRACTOR_WEIGHT = 1.0
_NOISE_WEIGHT = 0.6
_DISTRACTOR_BANK = 512


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and seed of the built-in synthetic data set."""

    num_classes: int = 10
    image_size: int = 32
    train_per_class: int = 500
    test_per_class: int = 100
    seed: int = 0


# eq=False: the generated __eq__ would compare tensors element-wise and fail; compare fingerprints.
@dataclass(frozen=True, eq=False)
class ImageData:
    """A train/test split of square RGB images in [0, 1] with hard labels (§1)."""

    train_x: Tensor  # (n_train, 3, a, a) float32
    train_y: Tensor  # (n_train,) int64
    test_x: Tensor  # (n_test, 3, a, a) float32
    test_y: Tensor  # (n_test,) int64
    class_names: tuple[str, ...]
    name: str
    fingerprint: str

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """a, the side of an image in pixels."""
        return int(self.train_x.shape[-1])


def load_dataset(
    name: str,
    root: str | Path,
    *,
    download: bool = False,
    cache_dir: Path | None = None,
    synthetic: SyntheticSpec | None = None,
) -> ImageData:
    """The real train and test images of data set `name` as float32 in [0, 1] (§1).

    `name` is one of `DATASET_NAMES`. `root` is ignored for "synthetic"; `cache_dir` is used only
    by "imagefolder", to keep decoded images between runs. Raises `DataError` for a missing or
    malformed data set and `ConfigError` for an unknown name.
    """
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, Path(root), download)
    if name == "imagefolder":
        return _load_imagefolder(Path(root), cache_dir)
    if name == "synthetic":
        return make_synthetic(synthetic if synthetic is not None else SyntheticSpec())
    raise ConfigError(f"data.name: unknown data set {name!r}; allowed: {', '.join(DATASET_NAMES)}")


def fingerprint_tensors(tensors: Iterable[Tensor], extra: Sequence[str] = ()) -> str:
    """A 16-hex-digit digest of the tensors' dtypes, shapes and bytes plus the strings in `extra`."""
    digest = hashlib.sha256()
    for text in extra:
        digest.update(text.encode() + b"\0")
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{t.dtype}|{tuple(t.shape)}\0".encode())
        # uint8 view: numpy has no bfloat16, and bytes are all the digest needs (hashed in place).
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def save_atomic(obj: Any, path: Path) -> None:
    """Writes `obj` with torch.save to `path` via a temporary file in the same folder.

    The rename is atomic on one file system, so a crash or a concurrent reader never sees a
    half-written cache file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache folder should stay readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _from_uint8(
    train_u8: Tensor, train_y: Tensor, test_u8: Tensor, test_y: Tensor,
    class_names: Sequence[str], name: str, fingerprint: str,
) -> ImageData:
    """ImageData with uint8 (n, 3, a, a) images scaled to float32 [0, 1]."""
    return ImageData(
        train_x=train_u8.to(torch.float32).div_(255.0),
        train_y=train_y.to(torch.int64),
        test_x=test_u8.to(torch.float32).div_(255.0),
        test_y=test_y.to(torch.int64),
        class_names=tuple(class_names),
        name=name,
        fingerprint=fingerprint,
    )


def _content_fingerprint(
    name: str, train_u8: Tensor, train_y: Tensor, test_u8: Tensor, test_y: Tensor,
    class_names: Sequence[str],
) -> str:
    """Fingerprint of decoded uint8 pixels, labels and class names of one source kind."""
    return fingerprint_tensors(
        (train_u8, train_y.to(torch.int64), test_u8, test_y.to(torch.int64)),
        extra=(name, *class_names),
    )


# --------------------------------------------------------------------------- CIFAR (torchvision)


def _load_cifar(name: str, root: Path, download: bool) -> ImageData:
    """CIFAR-10/100 train and test splits read by torchvision from `root`."""
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    splits = []
    for train in (True, False):
        try:
            splits.append(cls(str(root), train=train, download=download))
        except RuntimeError:
            # torchvision raises RuntimeError for a missing or corrupt copy.
            raise DataError(
                f"data.root: no {name} copy found at {root} (expected {root / cls.base_folder}); "
                f"set data.download=true or point data.root at an existing copy "
                f"(for a JPEG class-folder tree use data.name=imagefolder)"
            ) from None
        except OSError as err:
            raise DataError(
                f"data.download: downloading {name} into {root} failed ({err}); point data.root "
                f"at an existing copy"
            ) from None
    (tr, te) = splits

    def images(ds: Any) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()

    train_u8, test_u8 = images(tr), images(te)
    train_y = torch.as_tensor(tr.targets, dtype=torch.int64)
    test_y = torch.as_tensor(te.targets, dtype=torch.int64)
    fp = _content_fingerprint(name, train_u8, train_y, test_u8, test_y, tr.classes)
    return _from_uint8(train_u8, train_y, test_u8, test_y, tr.classes, name, fp)


# --------------------------------------------------------------------------- image folders


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


class _ImageFile(NamedTuple):
    """One image of an image-folder tree, with what the decoded-image cache key needs."""

    path: Path
    rel: str  # path relative to the tree, "/"-separated, e.g. "train/cat/0001.jpg"
    label: int
    size: int
    mtime_ns: int


def _image_files(tree: Path, split: str, class_name: str, label: int) -> list[_ImageFile]:
    """Image files under tree/split/class_name (any depth), sorted by path; hidden names skipped.

    os.scandir rather than Path.rglob: it lists and stats 60k files about four times faster.
    """
    class_dir = tree / split / class_name
    found: list[tuple[str, int, int]] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(class_dir / rel) as entries:
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
        raise DataError(f"data.root: class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    prefix = f"{split}/{class_name}/"
    return [
        _ImageFile(class_dir / rel, prefix + rel, label, size, mtime) for rel, size, mtime in sorted(found)
    ]


def _list_tree(tree: Path) -> tuple[list[str], dict[str, list[_ImageFile]]]:
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
        split: [f for k, c in enumerate(classes) for f in _image_files(tree, split, c, k)]
        for split in ("train", "test")
    }
    return classes, listing


def _listing_key(listing: dict[str, list[_ImageFile]]) -> str:
    """Digest of the relative paths, labels, sizes and mtimes of all files: the decode-cache key."""
    digest = hashlib.sha256(f"imagefolder-cache-v{_CACHE_FORMAT}\0".encode())
    for split in ("train", "test"):
        for f in listing[split]:
            digest.update(f"{f.rel}|{f.label}|{f.size}|{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _decode_one(path: Path, data: bytes) -> Tensor:
    """One image as uint8 (3, h, w); PIL handles every format, JPEG included."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
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


def _decode_images(paths: Sequence[Path]) -> Tensor:
    """All images of one split as uint8 (n, 3, a, a); every image must be a × a with one a."""
    out: Tensor | None = None
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
                    raise DataError(f"data.root: image {path} is {img.shape[-1]}x{img.shape[-2]}, not square")
                out = torch.empty((len(paths), 3, side, side), dtype=torch.uint8)
            if tuple(img.shape[-2:]) != tuple(out.shape[-2:]):
                raise DataError(
                    f"data.root: image {path} is {img.shape[-1]}x{img.shape[-2]}, "
                    f"expected {out.shape[-1]}x{out.shape[-2]} like the first image"
                )
        assert out is not None
        out[start:start + len(chunk)] = torch.stack(decoded)  # type: ignore[arg-type]
    assert out is not None
    return out


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


def _load_imagefolder(root: Path, cache_dir: Path | None) -> ImageData:
    """Images from train/<class>/* and test/<class>/*, classes = sorted train folder names."""
    tree = _resolve_tree(root)
    classes, listing = _list_tree(tree)
    key = _listing_key(listing)
    cache_path = cache_dir / f"imagefolder-{key}.pt" if cache_dir is not None else None
    entry = _read_decode_cache(cache_path, key) if cache_path is not None else None
    if entry is None:
        train_u8 = _decode_images([f.path for f in listing["train"]])
        test_u8 = _decode_images([f.path for f in listing["test"]])
        if train_u8.shape[-1] != test_u8.shape[-1]:
            raise DataError(
                f"data.root: train images are {train_u8.shape[-1]} px but test images "
                f"{test_u8.shape[-1]} px in {tree}"
            )
        train_y = torch.tensor([f.label for f in listing["train"]], dtype=torch.int64)
        test_y = torch.tensor([f.label for f in listing["test"]], dtype=torch.int64)
        fp = _content_fingerprint("imagefolder", train_u8, train_y, test_u8, test_y, classes)
        entry = {
            "format": _CACHE_FORMAT, "key": key, "train_x": train_u8, "train_y": train_y,
            "test_x": test_u8, "test_y": test_y, "class_names": list(classes), "fingerprint": fp,
        }
        if cache_path is not None:
            save_atomic(entry, cache_path)
    return _from_uint8(
        entry["train_x"], entry["train_y"], entry["test_x"], entry["test_y"],
        entry["class_names"], "imagefolder", entry["fingerprint"],
    )


# --------------------------------------------------------------------------- synthetic


def _smooth_fields(count: int, side: int, generator: torch.Generator) -> Tensor:
    """`count` smooth random colour fields (count, 3, side, side), each with unit variance.

    A 6 × 6 grid of N(0, 1) values upsampled bicubically gives blobs about side/6 px wide,
    low-frequency structure a small ConvNet can pick up.
    """
    coarse = torch.randn((count, 3, 6, 6), generator=generator)
    fields = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    return fields / fields.std(dim=(1, 2, 3), keepdim=True)


def _random_crops(fields: Tensor, which: Tensor, a: int, generator: torch.Generator) -> Tensor:
    """a × a crops (n, 3, a, a) of fields[which] at random offsets, each mirrored with prob. 0.5."""
    n = which.numel()
    span = fields.shape[-1] - a + 1
    oy = torch.randint(0, span, (n,), generator=generator)
    ox = torch.randint(0, span, (n,), generator=generator)
    flip = torch.rand((n,), generator=generator) < 0.5
    ar = torch.arange(a)
    # Mirroring is folded into the column index so the gather below is the only full-size pass.
    col_step = torch.where(flip[:, None], ar.flip(0), ar)
    rows = (oy[:, None] + ar)[:, None, :, None]  # (n, 1, a, 1)
    cols = (ox[:, None] + col_step)[:, None, None, :]  # (n, 1, 1, a)
    chan = torch.arange(3)[None, :, None, None]
    return fields[which[:, None, None, None], chan, rows, cols]  # (n, 3, a, a)


def _synthetic_split(
    templates: Tensor, distractors: Tensor, per_class: int, a: int, generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Images (K·per_class, 3, a, a) in [0, 1] and their labels (K·per_class,)."""
    labels = torch.arange(templates.shape[0]).repeat_interleave(per_class)
    n = labels.numel()
    x = _random_crops(templates, labels, a, generator)
    # A smooth distractor of the same statistics plus pixel noise keeps the classes from being
    # trivially separable: a small ConvNet lands well above chance but below 100 %.
    pick = torch.randint(0, distractors.shape[0], (n,), generator=generator)
    x.mul_(_TEMPLATE_WEIGHT).add_(_random_crops(distractors, pick, a, generator), alpha=_DISTRACTOR_WEIGHT)
    x.add_(torch.randn((n, 3, a, a), generator=generator), alpha=_NOISE_WEIGHT)
    return x.sigmoid_(), labels


def make_synthetic(spec: SyntheticSpec) -> ImageData:
    """The built-in synthetic data set: per class a smooth colour template, shifted, flipped, noised.

    Each class c has a fixed random low-frequency template; an image of class c is a random a × a
    crop (shift up to ±a/8) of it, mirrored with probability 0.5, plus a randomly cropped smooth
    distractor from a shared bank and pixel noise, squashed into [0, 1] by a sigmoid. Shapes
    (K·train_per_class, 3, a, a) and (K·test_per_class, 3, a, a). Deterministic in `spec.seed`;
    the fingerprint is a digest of the spec. At the default size a 3-layer ConvNet of width 32
    reaches about 65 % test accuracy after 300 SGD steps of batch 64 (chance 10 %).
    """
    for field_name in ("num_classes", "image_size", "train_per_class", "test_per_class"):
        if getattr(spec, field_name) < 1:
            raise ConfigError(f"data.synthetic.{field_name}: must be >= 1 (got {getattr(spec, field_name)})")
    generator = torch.Generator().manual_seed(spec.seed)
    a = spec.image_size
    side = a + 2 * max(1, a // 8)  # crops then shift by up to ±a/8
    templates = _smooth_fields(spec.num_classes, side, generator)
    distractors = _smooth_fields(_DISTRACTOR_BANK, side, generator)
    train_x, train_y = _synthetic_split(templates, distractors, spec.train_per_class, a, generator)
    test_x, test_y = _synthetic_split(templates, distractors, spec.test_per_class, a, generator)
    fingerprint = hashlib.sha256(
        f"synthetic-v{_SYNTHETIC_VERSION}|{spec.num_classes}|{a}|{spec.train_per_class}|"
        f"{spec.test_per_class}|{spec.seed}".encode()
    ).hexdigest()[:16]
    return ImageData(
        train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        class_names=tuple(f"class{c}" for c in range(spec.num_classes)),
        name="synthetic", fingerprint=fingerprint,
    )
