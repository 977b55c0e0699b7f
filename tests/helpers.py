"""Plain helpers that several test modules share: `from helpers import set_args, gen, ...`.

pytest puts tests/ on sys.path (rootdir conftest, default "prepend" import mode), the same way
test_plots.py imports from test_summary.py. Each helper imports ppodd inside its body, so a module
moved by a refactor breaks only the tests that use that helper, not every importer of this file.
Fixtures live in conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterable


def set_args(overrides: Iterable[str]) -> list[str]:
    """`--set KEY=VALUE` command-line arguments, one pair per override."""
    return [a for o in overrides for a in ("--set", o)]


def cli(*args):
    """`ppodd ARGS...` through typer's CliRunner, in this process; the click Result."""
    from typer.testing import CliRunner

    from ppodd.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def gen(seed: int = 0):
    """A CPU torch.Generator seeded with `seed`."""
    import torch

    return torch.Generator().manual_seed(seed)


def cifar10_geometry():
    """The poster geometry of CIFAR-10 at 0.9 images per class (153 x 60, 16 x 6 patches)."""
    from ppodd.method.poster import make_geometry

    return make_geometry(0.9, 10, 32)


def yaml_bomb(levels: int, width: int) -> str:
    """A "billion laughs" YAML text: line 1 anchors a list of `width` strings, each further line
    anchors a list of `width` aliases to the line before; expanded, it holds width**(levels + 1)
    strings. The first alias is on line 2."""
    names = [chr(ord("a") + i) for i in range(levels + 1)]
    laughs = ", ".join(['"lol"'] * width)
    lines = [f"a: &a [{laughs}]"]
    lines += [f"{name}: &{name} [{', '.join([f'*{before}'] * width)}]" for before, name in zip(names, names[1:])]
    return "\n".join(lines)


def assert_file_refused(load, path, text: str, match: str) -> None:
    """Write `text` to `path`; `load(path)` must raise a ConfigError whose message matches `match`."""
    import pytest

    from ppodd.errors import ConfigError

    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load(path)
