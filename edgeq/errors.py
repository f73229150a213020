"""Every failure a user can cause is an :class:`EdgeqError`.

The CLI prints ``str(error)`` as one line and exits with status 2, without a traceback. A message says what is
wrong, where (file, node, tensor, TOML key) and what to do about it.
"""

from __future__ import annotations


class EdgeqError(Exception):
    """Base class of every user-facing edgeq error."""

    exit_code = 2


class ModelError(EdgeqError):
    """The model file is unreadable, invalid, or uses something edgeq cannot handle."""


class DataError(EdgeqError):
    """Calibration or validation data is missing, malformed, or does not match the model's inputs."""


class ConfigError(EdgeqError):
    """A target profile, calibration recipe or option is invalid."""


class OutputExistsError(EdgeqError):
    """An output path exists and ``force`` was not given."""


class UnsupportedError(EdgeqError):
    """An operator, shape or setting that the chosen target or format cannot express."""


class DeviceError(EdgeqError):
    """A device could not be reached, or a command on it failed."""
