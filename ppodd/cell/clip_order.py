"""PoCO with real CLIP text embeddings (§4 steps 1–2), an optional extra never needed at run time.

Runs wherever the `transformers` package and the openai/clip-vit-base-patch32 weights are
available (`pip install 'ppodd[clip]'`), and writes a JSON grid that any run then loads with
`poster.class_order=FILE.json`:

    python -m ppodd.cell.clip_order --dataset cifar10 --rows 2 --cols 5 --out order.json
    python -m ppodd.cell.clip_order --dataset tinyimagenet --root data/tiny-imagenet-200 \
        --rows 10 --cols 20 --out tinyimagenet-order.json

Tiny-ImageNet and CUB take their readable class names from the data set's folder (`--root`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ppodd.datasets.catalog import read_class_names
from ppodd.method.class_order import greedy_order
from ppodd.errors import ConfigError

CLIP_MODEL = "openai/clip-vit-base-patch32"
# §4 step 1: the name lists PoDD encodes ("boat" for ship is theirs).
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "boat", "truck")


def cosine_distance(embeddings: torch.Tensor) -> torch.Tensor:
    """(K, K) matrix of 1 − cosine similarity between the rows of (K, D) embeddings."""
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    return 1 - unit @ unit.T


def clip_text_embeddings(names: Sequence[str]) -> torch.Tensor:
    """(K, 77·512) CLIP ViT-B/32 text encodings: the whole last hidden state, padded to 77 tokens."""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError:
        raise ConfigError("CLIP class order needs the optional extra: pip install 'ppodd[clip]'") from None
    try:
        tokenizer = CLIPTokenizer.from_pretrained(CLIP_MODEL)
        model = CLIPTextModel.from_pretrained(CLIP_MODEL).eval()
    except OSError as e:
        raise ConfigError(f"CLIP weights {CLIP_MODEL} cannot be loaded here ({e.__class__.__name__})") from None
    tokens = tokenizer(list(names), padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        return model(**tokens).last_hidden_state.flatten(1)


def poco_order(names: Sequence[str], rows: int, cols: int,
               embed: Callable[[Sequence[str]], torch.Tensor] = clip_text_embeddings) -> list[list[int]]:
    """The PoCO grid order[row][col]: greedy placement (§4 steps 3–5) by CLIP text distance."""
    return greedy_order(cosine_distance(embed(names)), rows, cols)


def main(argv: Sequence[str] | None = None) -> None:
    """Write a PoCO order computed with CLIP to a JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("cifar10", "tinyimagenet", "cub200"),
                        help="cifar10: the built-in name list; the others: the names of the folder --root")
    parser.add_argument("--root", type=Path, help="the data set's folder, as data.root")
    parser.add_argument("--names", nargs="+", help="class names in label order")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--cols", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    names = CIFAR10_NAMES if args.dataset == "cifar10" else args.names
    if args.dataset in ("tinyimagenet", "cub200"):
        if args.root is None:
            parser.error(f"--dataset {args.dataset} needs --root, the data set's folder")
        try:
            names = read_class_names(args.dataset, args.root)
        except ConfigError as err:  # DataError included: a missing or malformed folder
            parser.error(str(err))
    if not names:
        parser.error("give --dataset or --names")
    args.out.write_text(json.dumps(poco_order(names, args.rows, args.cols, clip_text_embeddings)) + "\n")


if __name__ == "__main__":
    main()
