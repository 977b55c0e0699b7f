"""Posters as files other tools read and write: tensors (.pt, .npy, .npz) and images (.png, .jpg).

The PoDD and P-PoDD reference codes save a poster with `torch.save` as a float32 tensor of shape
(1, 3, H, W) in the model's input space (ZCA-whitened when the run whitens); `write_poster_pt`
writes that layout and `read_poster_file` reads it back, along with (3, H, W) tensors, NumPy
arrays and images in pixel space. A `.pt` file is loaded with `weights_only=True`, so it can
hold tensors but never runs code. Every failure is one line naming the file and what was
expected (ConfigError: bad input, exit 2).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from ppodd.atomic import write_atomic
from ppodd.errors import ConfigError, describe

TENSOR_SUFFIXES = (".pt", ".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The array an .npz holds a poster or a label map under, when it holds more than one.
NPZ_KEYS = ("poster", "label_map", "labels")


def is_poster_file(name: str) -> bool:
    """True when `name` has the ending of a poster file this module reads."""
    return Path(name).suffix.lower() in TENSOR_SUFFIXES + IMAGE_SUFFIXES


def read_poster_file(path: Path) -> tuple[torch.Tensor, bool]:
    """(poster (3, H, W) float32, in_pixel_space) from a tensor or image file.

    Tensors are taken as they are (the model's input space); images are RGB in [0, 1], pixel space.
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_image(path), True
    array = read_tensor_file(path, "poster")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise ConfigError(f"{path}: holds an array of shape {tuple(array.shape)}; expected a poster of shape "
                          "(3, H, W) or (1, 3, H, W)")
    return _finite(path, array), False


def read_tensor_file(path: Path, what: str) -> torch.Tensor:
    """The one float32 tensor of a .pt, .npy or .npz file (in an .npz with several, the one named
    by NPZ_KEYS); ConfigError naming the file otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TENSOR_SUFFIXES:
        raise ConfigError(f"{path}: a {what} file must end in {', '.join(TENSOR_SUFFIXES + IMAGE_SUFFIXES)}"
                          if what == "poster" else f"{path}: a {what} file must end in {', '.join(TENSOR_SUFFIXES)}")
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what} file")
    try:
        if suffix == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(value, dict):
                value = _one_of(path, value)
        elif suffix == ".npy":
            value = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                value = _one_of(path, {key: npz[key] for key in npz.files})
    except ConfigError:
        raise
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile, KeyError, pickle.UnpicklingError) as err:
        # weights_only refuses anything but tensors and plain containers: a pickled object lands here.
        raise ConfigError(f"{path}: cannot be read as a {what} ({type(err).__name__}: {describe(err)[:120]})") from None
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise ConfigError(f"{path}: holds {value.dtype} values; expected numbers")
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise ConfigError(f"{path}: holds a {type(value).__name__}; expected a tensor")
    return value.detach().to(torch.float32)


def _one_of(path: Path, arrays: dict) -> object:
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    for key in NPZ_KEYS:
        if key in arrays:
            return arrays[key]
    raise ConfigError(f"{path}: holds {len(arrays)} arrays ({', '.join(map(str, arrays))}); expected one, "
                      f"or one named {' or '.join(NPZ_KEYS)}")


def _finite(path: Path, tensor: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ConfigError(f"{path}: holds {bad} NaN or infinite value(s); expected a finite poster")
    return tensor.contiguous()


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ConfigError(f"{path}: no such poster file")
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise ConfigError(f"{path}: cannot be read as an image ({describe(err)})") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def write_poster_pt(path: Path, poster: torch.Tensor) -> Path:
    """The reference codes' layout: a float32 (1, 3, H, W) tensor saved with torch.save."""
    tensor = poster.detach().to("cpu", torch.float32).reshape(1, *poster.shape[-3:]).clone()
    return write_atomic(Path(path), lambda tmp: torch.save(tensor, tmp))


def write_png(path: Path, image: np.ndarray) -> Path:
    """An (H, W, 3) image with values in [0, 1] as an 8-bit RGB PNG, one pixel per poster pixel."""
    from PIL import Image

    pixels = np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
    return write_atomic(Path(path), lambda tmp: Image.fromarray(pixels, "RGB").save(tmp, format="PNG"))


def write_patch_set(path: Path, poster: torch.Tensor, patches: torch.Tensor, labels: torch.Tensor,
                    class_names: list[str]) -> Path:
    """The poster, its patch set (N, 3, a, a) and their soft labels (N, K) as one .npz file."""
    arrays = {"poster": poster.detach().cpu().float().numpy(), "patches": patches.detach().cpu().float().numpy(),
              "labels": labels.detach().cpu().float().numpy(), "class_names": np.asarray(class_names, dtype=str)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # np.savez would append .npz to a name without it
            np.savez(handle, **arrays)

    return write_atomic(Path(path), write)


def write_image_folder(folder: Path, images: np.ndarray, labels: torch.Tensor, class_names: list[str]) -> Path:
    """Patches as PNG files in `folder/<class>/` (class = the label's argmax) and `labels.json`
    with every file's soft label, which evaluators of soft-label data sets read."""
    folder = Path(folder)
    soft = labels.detach().cpu().double()
    entries = {}
    for index, (image, label) in enumerate(zip(images, soft)):
        name = class_names[int(label.argmax())]
        (folder / name).mkdir(parents=True, exist_ok=True)
        rel = f"{name}/{index:05d}.png"
        write_png(folder / rel, image)
        entries[rel] = [round(float(v), 8) for v in label]
    text = json.dumps({"class_names": list(class_names), "labels": entries}, indent=1) + "\n"
    return write_atomic(folder / "labels.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
