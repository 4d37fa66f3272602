"""The project's own errors. The tools print these as one line and exit non-zero; any other exception is a
bug and keeps its traceback."""


class MbnetError(Exception):
    """A problem with the user's input (config, data, checkpoint, arguments) that the message explains."""


class ConfigError(MbnetError, ValueError):
    """A config key, value or file that cannot be used."""


class DataError(MbnetError, RuntimeError):
    """A dataset archive, image or split that cannot be used."""


class CheckpointError(MbnetError, RuntimeError):
    """A checkpoint, weights file or run directory that cannot be used."""


class ArgumentError(MbnetError, ValueError):
    """A model or tool argument that cannot be used."""


class NotInstalledError(ArgumentError):
    """An optional package that the chosen engine or tool needs is not installed."""
