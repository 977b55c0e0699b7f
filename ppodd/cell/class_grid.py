"""The class grid a config names (§4): a built-in order, or one read from a JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ppodd.errors import ConfigError
from ppodd.method.class_order import (
    CIFAR10_POCO,
    greedy_order,
    identity_order,
    superclass_distance,
    validate_order,
)

ORDER_SPECS = ("auto", "poco_cifar10", "superclass", "identity", "<path>.json")


def load_order_json(
    path: str | os.PathLike, rows: int, cols: int, num_classes: int
) -> list[list[int]]:
    """Return the class grid order[row][col] stored in a JSON file as a list of rows (§4)."""
    try:
        order = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"class order file {path} cannot be read: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"class order file {path} is not valid JSON: {err.msg}") from None
    return validate_order(order, rows, cols, num_classes, f"file {path}")


def resolve_class_order(
    spec: str | os.PathLike, dataset: str, rows: int, cols: int, num_classes: int
) -> list[list[int]]:
    """Return the class grid order[row][col] that a class_order setting names (§4).

    "auto" gives the shipped PoCO grid for cifar10 on 2 × 5, the superclass fallback for cifar100
    on 10 × 10, and identity otherwise; "poco_cifar10", "superclass" and "identity" force one;
    a path ending in .json is loaded with `load_order_json`.
    """
    spec_text = os.fspath(spec)
    if spec_text not in ORDER_SPECS[:-1] and not spec_text.endswith(".json"):
        raise ConfigError(
            f"class_order {spec_text!r} is unknown; allowed: {', '.join(ORDER_SPECS)}"
        )
    if rows * cols != num_classes:
        raise ConfigError(f"class grid {rows} x {cols} does not hold {num_classes} classes")
    if spec_text == "auto":
        if dataset == "cifar10" and (rows, cols, num_classes) == (2, 5, 10):
            spec_text = "poco_cifar10"
        elif dataset == "cifar100" and (rows, cols, num_classes) == (10, 10, 100):
            spec_text = "superclass"
        else:
            spec_text = "identity"
    if spec_text == "poco_cifar10":
        if (rows, cols, num_classes) != (2, 5, 10):
            raise ConfigError(
                f"class_order 'poco_cifar10' needs 10 classes on a 2 x 5 grid"
                f" (got {num_classes} on {rows} x {cols})"
            )
        return [list(r) for r in CIFAR10_POCO]
    if spec_text == "superclass":
        if num_classes != 100:
            raise ConfigError(f"class_order 'superclass' needs 100 classes (got {num_classes})")
        return greedy_order(superclass_distance(), rows, cols)
    if spec_text == "identity":
        return identity_order(rows, cols)
    return load_order_json(spec_text, rows, cols, num_classes)
