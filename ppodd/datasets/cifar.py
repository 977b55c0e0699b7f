"""CIFAR-10 and CIFAR-100 read by torchvision from their binary release (§1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ppodd.datasets.images import ImageData, content_fingerprint, from_uint8
from ppodd.errors import DataError


def load_cifar(name: str, root: Path, download: bool) -> ImageData:
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
    fp = content_fingerprint(name, train_u8, train_y, test_u8, test_y, tr.classes)
    return from_uint8(train_u8, train_y, test_u8, test_y, tr.classes, name, fp)


