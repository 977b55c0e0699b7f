"""The one error family that library code raises and only the CLI turns into exit codes."""


class PpoddError(Exception):
    """A failure the user can act on; the CLI prints its message in one line and exits 1."""

    exit_code = 1


class ConfigError(PpoddError):
    """Bad input (config key, value, file or flag); the CLI exits 2 before any work starts."""

    exit_code = 2


class DataError(ConfigError):
    """A data set that is missing, empty or malformed; reported like any other bad input."""
