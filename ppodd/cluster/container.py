"""Array tasks inside an Apptainer image: the wrapped python command and the version check.

`ppodd submit --container IMAGE.sif` makes submitit start each task's python through
`apptainer exec --nv --bind ... IMAGE python3` instead of the submitting interpreter. Never
`--cleanenv`: it strips the SLURM_* and SUBMITIT_EXECUTOR variables submitit reads inside the task.
The task unpickles a `CellTask` built on the submitting side, so the image must hold the same ppodd
and submitit; `version_mismatch` is what the task checks before it starts work.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ppodd.errors import ConfigError

PYTHON = "python3"  # on the image's PATH (Dockerfile / Apptainer.def); Apptainer does not pass the host PATH


@dataclass(frozen=True)
class Container:
    """An Apptainer image (a .sif file or sandbox folder) and the host folders bound into it."""

    image: Path
    binds: tuple[str, ...]


def parse_container(image: Path, binds: list[str], out: Path) -> Container:
    """The validated container of `--container IMAGE --bind DIR ...`; ConfigError on a bad value.

    The results folder is always bound: submitit's pickles and the cells' files live there, at
    the same absolute paths inside as outside. Each bind is SRC[:DEST[:OPTS]], or a comma-separated
    list of them; SRC must exist here, since the login node and the compute nodes share it.
    """
    path = Path(image).expanduser().absolute()
    if not path.exists():
        raise ConfigError(f"--container {str(image)!r}: no such file; build it first "
                          "(containers/build-sif.sh or containers/sif-from-docker.sh)")
    if not (path.is_dir() or path.suffix == ".sif"):
        raise ConfigError(f"--container {str(image)!r}: expected an Apptainer .sif file or a sandbox folder")
    seen = [str(Path(out).expanduser().absolute())]
    for text in binds:
        for item in text.split(","):
            src, sep, rest = item.strip().partition(":")
            if not src:
                raise ConfigError(f"--bind {text!r}: expected SRC[:DEST[:OPTS]], comma-separated, e.g. /data,/scratch")
            src_path = Path(src).expanduser().absolute()
            if not src_path.exists():
                raise ConfigError(f"--bind {text!r}: {src_path} does not exist on this machine")
            bind = f"{src_path}{sep}{rest}"
            if bind not in seen:
                seen.append(bind)
    return Container(path, tuple(seen))


def python_command(container: Container) -> str:
    """The shell words that start the image's python: submitit's `python` for each array task."""
    words = ["apptainer", "exec", "--nv", "--bind", ",".join(container.binds), str(container.image), PYTHON]
    return " ".join(shlex.quote(w) for w in words)


def version_mismatch(submitted: dict[str, str], running: dict[str, str]) -> str:
    """One line saying which package versions differ between submit side and task, or ''."""
    differ = [f"{name} {running.get(name)} here but {version} at submission"
              for name, version in submitted.items() if running.get(name) != version]
    if not differ:
        return ""
    return ("version mismatch: " + "; ".join(differ) + "; install the submitting versions where tasks run "
            "(for --container, rebuild the image: containers/README.md) and rerun `ppodd submit`")
