"""Image sets as tensors: the `ImageData` every loader returns, and what loaders share.

Images are float32 in [0, 1], shape (n, 3, a, a), with hard class-index labels. No mean/std
normalisation is applied: with ZCA on, the whitening of `ppodd.datasets.zca` is the only
preprocessing (§1).

`ImageData.fingerprint` identifies the decoded contents (pixels, labels, class names) plus the
kind of source, not the folder they were read from, so moving or re-extracting a data set keeps
its ZCA cache valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ppodd.atomic import write_atomic


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



def save_cached(obj: Any, path: Path) -> None:
    """`obj` saved with torch.save at `path` in a cache folder, atomically (created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def from_uint8(
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


def content_fingerprint(
    name: str, train_u8: Tensor, train_y: Tensor, test_u8: Tensor, test_y: Tensor,
    class_names: Sequence[str],
) -> str:
    """Fingerprint of decoded uint8 pixels, labels and class names of one source kind."""
    return fingerprint_tensors(
        (train_u8, train_y.to(torch.int64), test_u8, test_y.to(torch.int64)),
        extra=(name, *class_names),
    )


