"""Posters from outside a run, made ready to evaluate: files checked against the config's geometry,
images moved into the model's input space, and strips of random real images at a pixel budget.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ppodd.cell.prepare import Prepared
from ppodd.datasets.zca import normalise_rows
from ppodd.errors import ConfigError
from ppodd.method.poster import PosterGeometry
from ppodd.storage.poster_files import read_poster_file, read_tensor_file


def poster_from_file(prep: Prepared, path: Path) -> torch.Tensor:
    """The poster of a tensor or image file as a (3, H, W) tensor in the model's input space.

    Its size must be the config's poster (H × W from `poster.*`); an image in pixel space is
    whitened with the config's ZCA (`whiten_poster`) when the config whitens.
    """
    poster, pixel_space = read_poster_file(path)
    geom = prep.geom
    if tuple(poster.shape[-2:]) != (geom.height, geom.width):
        raise ConfigError(f"{path}: poster is {poster.shape[-1]} x {poster.shape[-2]} (W x H); the config's "
                          f"poster is {geom.width} x {geom.height} (poster.ipc={prep.cfg.poster.ipc:g} on "
                          f"{prep.data.num_classes} classes of {geom.tile} px); set poster.ipc, or "
                          "poster.width and poster.height, to match")
    if pixel_space and prep.zca_matrix is not None:
        poster = whiten_poster(poster, prep.zca_matrix, geom)
    return poster.to(prep.device)


def label_map_from_file(prep: Prepared, path: Path) -> torch.Tensor:
    """A learned label map (K, h_l, w_l) from a tensor file, checked against the config's shape."""
    if prep.label_shape is None:
        raise ConfigError(f"--labels {path}: the config uses fixed labels (poster.labels=fixed); a label map "
                          "needs poster.labels=learned")
    tensor = read_tensor_file(path, "label map")
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    expected = (prep.data.num_classes, *prep.label_shape)
    if tuple(tensor.shape) != expected:
        raise ConfigError(f"--labels {path}: label map of shape {tuple(tensor.shape)}; expected {expected} "
                          "(classes, h_l, w_l) for the config's poster")
    if not torch.isfinite(tensor).all() or (tensor < 0).any():
        raise ConfigError(f"--labels {path}: a label map holds finite values >= 0")
    return tensor.to(prep.device)


def whiten_poster(poster: torch.Tensor, matrix: torch.Tensor, geom: PosterGeometry) -> torch.Tensor:
    """A pixel-space poster (3, H, W) in the whitened space, patch by patch (§1).

    ZCA acts on a × a images, so every patch at the n_x × n_y patch origins is normalised as a
    training image is (centred, unit norm) and whitened on its own, and overlapping pixels take
    the mean. A poster the model saw patch by patch is whitened the way its patches were.
    """
    a = geom.tile
    total = torch.zeros(poster.shape, dtype=torch.float64)
    count = torch.zeros(poster.shape[-2:], dtype=torch.float64)
    m = matrix.to(torch.float64)
    for y in geom.patch_y:
        for x in geom.patch_x:
            patch = poster[:, y:y + a, x:x + a].reshape(1, -1)
            total[:, y:y + a, x:x + a] += (normalise_rows(patch, torch.float64) @ m.T).reshape(3, a, a)
            count[y:y + a, x:x + a] += 1
    return (total / count.clamp_min(1)).to(torch.float32)


def pixels_for_ipc(prep: Prepared, ipc: float) -> int:
    """The pixel budget of `ipc` images per class of the data set's size."""
    return int(ipc * prep.data.num_classes * prep.data.image_size ** 2)


def random_real_strip(prep: Prepared, pixels: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor,
                                                                                       PosterGeometry]:
    """Whole random training images within a budget of `pixels`, as one strip poster.

    As many images as the budget holds, class-balanced: every class gets the same count and the
    remainder goes to classes drawn at random. The images sit side by side in a strip (3, a, n·a)
    whose n non-overlapping patches are the images, with one-hot labels (1, n, K), so the same
    evaluation trains on them as on a poster. Returns (strip, labels, geometry).
    """
    a, classes = prep.data.image_size, prep.data.num_classes
    count = pixels // (a * a)
    if count < 1:
        raise ConfigError(f"--pixels {pixels}: less than one {a} x {a} image ({a * a} pixels)")
    per_class = torch.full((classes,), count // classes, dtype=torch.long)
    per_class[torch.randperm(classes, generator=generator)[:count % classes]] += 1
    labels_cpu = prep.train_y.cpu()
    picks = []
    for c in range(classes):
        members = (labels_cpu == c).nonzero().flatten()
        if int(per_class[c]) > members.numel():
            raise ConfigError(f"--pixels {pixels}: class {prep.data.class_names[c]} has {members.numel()} "
                              f"training images, fewer than the {int(per_class[c])} the budget takes")
        picks.append(members[torch.randperm(members.numel(), generator=generator)[:int(per_class[c])]])
    index = torch.cat(picks)
    images = prep.train_x[index.to(prep.train_x.device)]                     # (n, 3, a, a)
    strip = images.permute(1, 2, 0, 3).reshape(3, a, count * a)             # side by side
    labels = torch.nn.functional.one_hot(labels_cpu[index], classes).float()[None]
    geom = PosterGeometry(height=a, width=count * a, tile=a, rows=1, cols=count, n_x=count, n_y=1,
                          num_classes=classes)
    return strip, labels.to(strip.device), geom
