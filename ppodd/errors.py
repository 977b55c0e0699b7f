"""The one error family that library code raises and only the CLI turns into exit codes."""

import os


class PpoddError(Exception):
    """A failure the user can act on; the CLI prints its message in one line and exits 1."""

    exit_code = 1


class ConfigError(PpoddError):
    """Bad input (config key, value, file or flag); the CLI exits 2 before any work starts."""

    exit_code = 2


class DataError(ConfigError):
    """A data set that is missing, empty or malformed; reported like any other bad input."""


def describe(error: BaseException) -> str:
    """One short line for an OS or library error: the text of its errno, else its first line."""
    code = getattr(error, "errno", None)
    if isinstance(code, int) and code > 0:
        # h5py puts a multi-line HDF5 report in strerror; the errno says it in a few words.
        return os.strerror(code)
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return " ".join(text.split())[:200] or type(error).__name__
