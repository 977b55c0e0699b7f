"""Tiny-ImageNet-200, CUB-200-2011 and image folders of any image size (docs/method.md §1).

Every fixture is written by the tests in the data set's real on-disk layout, with a few tiny
images per class and a handful of classes: the loaders must not assume 200 classes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, set_args
from PIL import Image

from ppodd.cell.class_grid import load_order_json, resolve_class_order
from ppodd.cell.clip_order import main as clip_order_main
from ppodd.cell.prepare import build_geometry, plan_poster
from ppodd.cell.identity import config_digest, result_fields
from ppodd.config import load_config
from ppodd.datasets.catalog import load_dataset
from ppodd.datasets.images import ImageData
from ppodd.errors import ConfigError, DataError
from ppodd.method.class_order import identity_order

WNIDS = ("n02123045", "n01443537", "n03126707", "n02012849")  # unsorted, as wnids.txt is
WORDS = {"n01443537": "goldfish, Carassius auratus", "n02123045": "tabby, tabby cat",
         "n03126707": "crane", "n02012849": "crane", "n09999999": "not in the set"}
CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
# Six classes make a 2 x 3 grid, whose poster is large enough for a learned label map (§5.2).
SIX_WNIDS = (*WNIDS, "n01629819", "n01641577")
SIX_CUB = (*CUB_CLASSES, "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet")

# Shrinks a 200-class preset to a seconds-long run on the fixtures' few classes of 8 x 8 images.
SHRINK = ["poster.width=0", "poster.height=0", "poster.rows=0", "poster.cols=0", "poster.patches_x=0",
          "poster.patches_y=0", "model.width=4", "model.depth=2", "distill.epochs=2", "distill.batch_patches=8",
          "distill.real_batch=8", "distill.real_subbatch=0", "distill.window=2", "distill.total_window=4",
          "eval.nets=2", "eval.checkpoints=[2,4]", "eval.every_epochs=0", "ppodd.stages=2"]


def _pixels(seed: int, width: int = 8, height: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height or width, width, 3), dtype=np.uint8)


def _decoded(path: Path) -> torch.Tensor:
    """What PIL makes of an image file, as float (3, h, w) in [0, 1]."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def _tiny_layout(root: Path, wnids=WNIDS, train=3, val=2, words=True) -> Path:
    """tiny-imagenet-200/ as the zip unpacks: wnids.txt, words.txt, train/, val/, test/."""
    tree = root / "tiny-imagenet-200"
    tree.mkdir(parents=True)
    (tree / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    if words:
        (tree / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in WORDS.items()))
    for k, wnid in enumerate(wnids):
        images = tree / "train" / wnid / "images"
        images.mkdir(parents=True)
        (tree / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(train):
            Image.fromarray(_pixels(100 * k + i)).save(images / f"{wnid}_{i}.JPEG", quality=95)
    (tree / "val" / "images").mkdir(parents=True)
    lines = []
    for j in range(val * len(wnids)):
        name = f"val_{j}.JPEG"
        Image.fromarray(_pixels(5000 + j)).save(tree / "val" / "images" / name, quality=95)
        lines.append(f"{name}\t{wnids[j % len(wnids)]}\t0\t1\t6\t7\n")
    (tree / "val" / "val_annotations.txt").write_text("".join(lines))
    (tree / "test" / "images").mkdir(parents=True)
    Image.fromarray(_pixels(9)).save(tree / "test" / "images" / "test_0.JPEG")
    return tree


def _cub_layout(root: Path, classes=CUB_CLASSES, per_class=4) -> Path:
    """CUB_200_2011/ as the tgz unpacks: the four id tables and images/ of varying sizes, every
    other image of a class in the test split, one grayscale JPEG."""
    tree = root / "CUB_200_2011"
    images, labels, split = [], [], []
    for c, folder in enumerate(classes, 1):
        (tree / "images" / folder).mkdir(parents=True)
        for i in range(per_class):
            image_id = len(images) + 1
            rel = f"{folder}/{folder[4:]}_{i:04d}_{image_id}.jpg"
            arr = _pixels(image_id, width=12 + 3 * i, height=10 + 2 * c)
            (Image.fromarray(arr).convert("L") if image_id == 2 else Image.fromarray(arr)).save(tree / "images" / rel)
            images.append(f"{image_id} {rel}\n")
            labels.append(f"{image_id} {c}\n")
            split.append(f"{image_id} {1 - i % 2}\n")
    (tree / "classes.txt").write_text("".join(f"{c} {name}\n" for c, name in enumerate(classes, 1)))
    (tree / "images.txt").write_text("".join(images))
    (tree / "image_class_labels.txt").write_text("".join(labels))
    (tree / "train_test_split.txt").write_text("".join(split))
    return tree


def _write_tree(root: Path, sizes: dict[str, tuple[int, int]]) -> None:
    """An image-folder tree, train and test, one image per class per size of `sizes` (name -> w, h)."""
    for split in ("train", "test"):
        for k, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i, (name, (w, h)) in enumerate(sizes.items()):
                Image.fromarray(_pixels(10 * k + i, w, h)).save(root / split / cls / f"{name}.png")


# --------------------------------------------------------------------------- Tiny-ImageNet


def test_tinyimagenet_reads_the_archive_layout_with_readable_names_and_val_as_test(tmp_path):
    tree = _tiny_layout(tmp_path)
    d = load_dataset("tinyimagenet", tmp_path)   # the folder the zip unpacked into is found
    assert d.name == "tinyimagenet" and d.image_size == 8
    # Labels follow the sorted wnids; names are the first of words.txt, a shared one with its wnid.
    assert d.class_names == ("goldfish", "crane (n02012849)", "tabby", "crane (n03126707)")
    assert d.train_x.shape == (12, 3, 8, 8) and d.train_y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    first_tabby = tree / "train" / "n02123045" / "images" / "n02123045_0.JPEG"
    torch.testing.assert_close(d.train_x[6], _decoded(first_tabby), rtol=0, atol=0)
    # Test split: val/, by label then file name; val_0 is the tabby (label 2), val_4 too.
    assert d.test_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    torch.testing.assert_close(d.test_x[4], _decoded(tree / "val" / "images" / "val_0.JPEG"), rtol=0, atol=0)
    torch.testing.assert_close(d.test_x[5], _decoded(tree / "val" / "images" / "val_4.JPEG"), rtol=0, atol=0)


def test_tinyimagenet_without_words_names_classes_by_wnid_and_reads_a_rearranged_val(tmp_path):
    tree = _tiny_layout(tmp_path / "a", words=False)
    plain = load_dataset("tinyimagenet", tree)
    assert plain.class_names == tuple(sorted(WNIDS))
    # The PoDD reference's helper moves val/images/X into val/<wnid>/images/X: the same data.
    for line in (tree / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        (tree / "val" / wnid / "images").mkdir(parents=True, exist_ok=True)
        os.replace(tree / "val" / "images" / name, tree / "val" / wnid / "images" / name)
    (tree / "val" / "images").rmdir()
    moved = load_dataset("tinyimagenet", tree)
    assert moved.fingerprint == plain.fingerprint and torch.equal(moved.test_x, plain.test_x)


@pytest.mark.parametrize("breakage, says", [
    (lambda t: (t / "wnids.txt").unlink(), "wnids.txt is missing; expected Tiny-ImageNet-200"),
    (lambda t: (t / "val" / "val_annotations.txt").unlink(), "val_annotations.txt is missing"),
    (lambda t: os.rename(t / "train" / "n01443537", t / "train" / "other"), "train/n01443537 is missing"),
    (lambda t: (t / "val" / "images" / "val_3.JPEG").unlink(), "val_3.JPEG listed in"),
    (lambda t: (t / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn00000001\t0\t0\t1\t1\n"),
     "line 1 names class n00000001, which wnids.txt does not list"),
    (lambda t: (t / "val" / "val_annotations.txt").write_text("val_0.JPEG\n"), "line 1 is not 'file<tab>wnid"),
    (lambda t: (t / "wnids.txt").write_text("\n"), "wnids.txt lists no classes"),
    (lambda t: [p.unlink() for p in (t / "train" / "n02123045" / "images").iterdir()], "holds no images"),
], ids=["wnids", "annotations", "train-class", "val-image", "unknown-wnid", "short-line", "no-classes", "empty-class"])
def test_tinyimagenet_incomplete_folder_is_one_line_naming_what_is_missing(tmp_path, breakage, says):
    tree = _tiny_layout(tmp_path)
    breakage(tree)
    with pytest.raises(DataError) as err:
        load_dataset("tinyimagenet", tree)
    message = str(err.value)
    assert message.startswith("data.root: ") and says in message and "\n" not in message


# --------------------------------------------------------------------------- CUB-200-2011


def test_cub200_reads_the_official_split_squashed_to_32_with_readable_names(tmp_path):
    tree = _cub_layout(tmp_path)
    d = load_dataset("cub200", tmp_path)
    assert d.name == "cub200" and d.image_size == 32
    assert d.class_names == ("Black footed Albatross", "Laysan Albatross", "Sooty Albatross")
    # Images 1, 3 of each class are training images (is_train 1), 2, 4 test; labels by class id.
    assert d.train_y.tolist() == [0, 0, 1, 1, 2, 2] and d.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    lines = (tree / "images.txt").read_text().splitlines()
    # Squash: both sides scaled with PIL's bilinear filter, as torchvision's Resize((32, 32)).
    third = tree / "images" / lines[2].split()[1]
    expected = Image.open(third).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
    torch.testing.assert_close(d.train_x[1], torch.from_numpy(np.asarray(expected).copy()).permute(2, 0, 1) / 255,
                               rtol=0, atol=0)
    # Image 2 is a grayscale JPEG: three equal channels.
    assert torch.equal(d.test_x[0][0], d.test_x[0][1]) and torch.equal(d.test_x[0][1], d.test_x[0][2])


def test_cub200_image_size_and_center_crop_are_honoured(tmp_path):
    _cub_layout(tmp_path)
    squash = load_dataset("cub200", tmp_path, image_size=8)
    crop = load_dataset("cub200", tmp_path, image_size=8, resize="center_crop")
    assert squash.image_size == crop.image_size == 8
    assert squash.fingerprint != crop.fingerprint


@pytest.mark.parametrize("breakage, says", [
    (lambda t: (t / "images.txt").unlink(), "images.txt is missing; expected CUB-200-2011"),
    (lambda t: (t / "classes.txt").unlink(), "classes.txt is missing"),
    (lambda t: (t / "image_class_labels.txt").unlink(), "image_class_labels.txt is missing"),
    (lambda t: (t / "train_test_split.txt").unlink(), "train_test_split.txt is missing"),
    (lambda t: next((t / "images").rglob("*_5.jpg")).unlink(), "_5.jpg listed in"),
    (lambda t: (t / "train_test_split.txt").write_text("1 1\n"), "train_test_split.txt has no line for image 2"),
    (lambda t: (t / "image_class_labels.txt").write_text(
        (t / "image_class_labels.txt").read_text().replace("1 1\n", "1 9\n", 1)), "class '9', which classes.txt"),
    (lambda t: (t / "train_test_split.txt").write_text(
        (t / "train_test_split.txt").read_text().replace("1 1\n", "1 yes\n", 1)), "expected 1 (train) or 0"),
    (lambda t: (t / "train_test_split.txt").write_text(
        "".join(f"{i} {0 if i > 8 else 1}\n" for i in range(1, 13))), "have no training image"),
    (lambda t: (t / "images.txt").write_text("one two\n"), "line 1 is not 'id value'"),
], ids=["images", "classes", "labels", "split", "image-file", "split-short", "unknown-class", "split-value",
        "class-without-train", "malformed"])
def test_cub200_incomplete_folder_is_one_line_naming_what_is_missing(tmp_path, breakage, says):
    tree = _cub_layout(tmp_path)
    breakage(tree)
    with pytest.raises(DataError) as err:
        load_dataset("cub200", tree)
    message = str(err.value)
    assert message.startswith("data.root: ") and says in message and "\n" not in message


# --------------------------------------------------------------------------- image folders of any size


def test_imagefolder_any_size_squash_and_center_crop_match_pil(tmp_path):
    _write_tree(tmp_path, {"wide": (20, 10), "tall": (6, 14), "square": (8, 8)})
    squash = load_dataset("imagefolder", tmp_path, image_size=8)
    crop = load_dataset("imagefolder", tmp_path, image_size=8, resize="center_crop")
    assert squash.train_x.shape == crop.train_x.shape == (6, 3, 8, 8)
    names = sorted(["wide", "tall", "square"])          # a class's files are read in path order
    at = names.index("wide")
    wide = Image.fromarray(_pixels(0, 20, 10))          # train/cat/wide.png
    want_squash = np.array(wide.resize((8, 8), Image.Resampling.BILINEAR))
    want_crop = np.array(wide.resize((8, 8), Image.Resampling.BILINEAR, box=(5, 0, 15, 10)))
    assert torch.equal((squash.train_x[at] * 255).round().to(torch.uint8), torch.from_numpy(want_squash).permute(2, 0, 1))
    assert torch.equal((crop.train_x[at] * 255).round().to(torch.uint8), torch.from_numpy(want_crop).permute(2, 0, 1))
    # An image already 8 x 8 is kept as it is.
    square = torch.from_numpy(_pixels(2, 8, 8)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(squash.train_x[names.index("square")], square, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "P-transparent"])
def test_imagefolder_converts_grayscale_alpha_and_palette_images_to_rgb(tmp_path, mode):
    _write_tree(tmp_path, {"a": (8, 8)})
    odd = tmp_path / "train" / "dog" / "a.png"
    rgb = Image.fromarray(_pixels(3))
    if mode == "P-transparent":
        image = rgb.convert("P")
        image.info["transparency"] = 0
    else:
        image = rgb.convert(mode)
    image.save(odd)
    d = load_dataset("imagefolder", tmp_path)
    reference = Image.open(odd)
    reference = reference.convert("RGBA") if mode == "P-transparent" else reference
    want = torch.from_numpy(np.asarray(reference.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    assert d.train_x.shape == (2, 3, 8, 8)
    torch.testing.assert_close(d.train_x[1], want, rtol=0, atol=0)


def test_imagefolder_of_mixed_sizes_without_image_size_says_how_to_resize(tmp_path):
    _write_tree(tmp_path, {"a": (8, 8), "b": (10, 10)})
    with pytest.raises(DataError, match="expected 8x8 like the first image; set data.image_size"):
        load_dataset("imagefolder", tmp_path)


def _old_listing_key(tree: Path) -> str:
    """The decode-cache key as ppodd computed it before resizing existed, written out again."""
    digest = hashlib.sha256(b"imagefolder-cache-v1\0")
    for split in ("train", "test"):
        for k, cls in enumerate(sorted(os.listdir(tree / "train"))):
            for name in sorted(os.listdir(tree / split / cls)):
                st = (tree / split / cls / name).stat()
                digest.update(f"{split}/{cls}/{name}|{k}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def test_square_folder_keeps_its_cache_key_and_fingerprint_and_resizing_has_its_own_cache(tmp_path):
    _write_tree(tmp_path / "tree", {"a": (8, 8), "b": (8, 8)})
    cache = tmp_path / "cache"
    plain = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache)
    assert [p.name for p in cache.iterdir()] == [f"imagefolder-{_old_listing_key(tmp_path / 'tree')}.pt"]
    # The fingerprint of these pixels, labels and names as ppodd 0.2 computed it (ZCA caches use it).
    assert plain.fingerprint == "ac4d5e78b9cb0cb2"
    resized = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache, image_size=4)
    again = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache, image_size=4)
    assert resized.image_size == 4 and again.fingerprint == resized.fingerprint != plain.fingerprint
    assert len(list(cache.iterdir())) == 2


# --------------------------------------------------------------------------- configuration


def test_image_size_is_refused_where_it_cannot_apply_and_defaults_keep_the_digest():
    with pytest.raises(ConfigError, match="data.image_size: resizes imagefolder, tinyimagenet and cub200"):
        load_config("configs/cifar10.yaml", ["data.image_size=16"])
    with pytest.raises(ConfigError, match="data.resize: 'crop' is not one of squash, center_crop"):
        load_config("configs/demo.yaml", ["data.resize=crop"])
    base = load_config("configs/demo.yaml")
    assert "image_size" not in result_fields(base)["data"] and "resize" not in result_fields(base)["data"]
    folder = load_config("configs/cpu.yaml")
    assert config_digest(load_config("configs/cpu.yaml", ["data.image_size=32"])) != config_digest(folder)


# --------------------------------------------------------------------------- presets and class orders


def _fake_data(classes: int, side: int, train: int, test: int) -> ImageData:
    """ImageData of the given size that holds one real image: the others are views of it."""
    one = torch.zeros(1, 3, side, side)
    return ImageData(one.expand(train, -1, -1, -1), torch.zeros(train, dtype=torch.int64),
                     one.expand(test, -1, -1, -1), torch.zeros(test, dtype=torch.int64),
                     tuple(f"c{k}" for k in range(classes)), "fake", "0" * 16)


@pytest.mark.parametrize("preset, side, train, test, poster, patches", [
    ("configs/tinyimagenet.yaml", 64, 100_000, 10_000, (1211, 608), (40, 20)),
    ("configs/cub200.yaml", 32, 5_994, 5_794, (610, 302), (60, 30)),
])
def test_presets_geometry_class_order_and_memory_checks(monkeypatch, preset, side, train, test, poster, patches):
    import ppodd.cell.prepare as prepare

    cfg = load_config(preset)
    data = _fake_data(200, side, train, test)
    monkeypatch.setattr(prepare, "free_memory", lambda device: 64 << 30)
    geom, order = plan_poster(cfg, data, torch.device("cpu"))
    assert (geom.width, geom.height, geom.cols, geom.rows, geom.tile) == (*poster, 20, 10, side)
    assert (geom.n_x, geom.n_y) == patches and geom.effective_ipc <= 0.9
    assert order == identity_order(10, 20)          # auto: the offline fallback for 200 classes
    assert geom == build_geometry(cfg, 200, side, cfg.data.name)


def test_tinyimagenet_memory_check_says_what_zca_and_images_need(monkeypatch):
    import ppodd.cell.prepare as prepare

    cfg = load_config("configs/tinyimagenet.yaml")
    data = _fake_data(200, 64, 100_000, 10_000)
    monkeypatch.setattr(prepare, "free_memory", lambda device: 4 << 30)
    with pytest.raises(ConfigError) as err:
        plan_poster(cfg, data, torch.device("cpu"))
    assert str(err.value).startswith("data.zca: whitening 64 x 64 images needs at least 4.5 GiB, more than the 4 GiB")
    assert "12288 x 12288 float64" in str(err.value)
    # The fit fits in 6 GiB; the 110,000 whitened images (5.03 GiB) and M (1.69 GiB) do not.
    monkeypatch.setattr(prepare, "free_memory", lambda device: 6 << 30)
    with pytest.raises(ConfigError, match=r"the 110000 tinyimagenet images of 64 x 64 need 6.72 GiB on cpu"):
        plan_poster(cfg, data, torch.device("cpu"))


@pytest.mark.parametrize("preset", ["configs/tinyimagenet.yaml", "configs/cub200.yaml"])
def test_presets_pass_submit_dry_run(tmp_path, preset):
    out = tmp_path / "results"
    result = cli("submit", "--config", preset, "--ipc", "0.9", "--seeds", "0-1", "--out", str(out),
                 "--cluster", "slurm", "--dry-run", "--partition", "gpu", "--time", "12:00:00")
    assert result.exit_code == 0, result.output
    name = load_config(preset).data.name
    assert "#SBATCH" in result.output and f"ppodd-{name}-ipc0.9-seed1-" in result.output
    assert not out.exists()


def test_class_order_for_200_classes_auto_identity_file_and_poco(tmp_path, monkeypatch):
    assert resolve_class_order("auto", "tinyimagenet", 10, 20, 200) == identity_order(10, 20)
    grid = [list(range(r * 20, r * 20 + 20))[::-1] for r in range(10)]
    (tmp_path / "order.json").write_text(json.dumps(grid))
    assert resolve_class_order(str(tmp_path / "order.json"), "cub200", 10, 20, 200) == grid
    # PoCO from the folder's readable names (CLIP stubbed: orthogonal embeddings).
    _tiny_layout(tmp_path / "tiny")
    monkeypatch.setattr("ppodd.cell.clip_order.clip_text_embeddings", lambda names: torch.eye(len(names)))
    clip_order_main(["--dataset", "tinyimagenet", "--root", str(tmp_path / "tiny"), "--rows", "2", "--cols", "2",
                     "--out", str(tmp_path / "poco.json")])
    assert sorted(sum(load_order_json(tmp_path / "poco.json", 2, 2, 4), [])) == [0, 1, 2, 3]


# --------------------------------------------------------------------------- ppodd run, end to end


@pytest.mark.slow
@pytest.mark.parametrize("preset, layout, extra", [
    ("configs/tinyimagenet.yaml", lambda root: _tiny_layout(root, wnids=SIX_WNIDS), []),
    ("configs/cub200.yaml", lambda root: _cub_layout(root, classes=SIX_CUB), ["data.image_size=8"]),
], ids=["tinyimagenet", "cub200"])
def test_ppodd_run_end_to_end_on_each_layout(tmp_path, preset, layout, extra):
    root = layout(tmp_path / "data")
    sets = set_args([f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", *SHRINK, *extra])
    result = cli("run", "--config", preset, *sets, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip().splitlines()[-1])
    assert path.exists() and path.name.startswith(f"ppodd-{load_config(preset).data.name}-ipc0.9-")
    names = {p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()}
    assert names == {load_config(preset).data.name, "zca"}   # decoded images and ZCA, both cached


def test_ppodd_run_on_a_broken_layout_exits_2_with_one_line(tmp_path):
    tree = _cub_layout(tmp_path / "data")
    (tree / "train_test_split.txt").unlink()
    result = cli("run", "--config", "configs/cub200.yaml", *set_args([f"data.root={tree}", *SHRINK]),
                 "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{tree / 'train_test_split.txt'} is missing" in lines[0]
    assert not (tmp_path / "out").exists()
