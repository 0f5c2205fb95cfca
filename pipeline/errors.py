"""User-facing errors. Each message names the file, folder or flag and what is wrong with it.

The CLI prints any :class:`KwsError` as one line and exits with code 2; anything else is a bug
and keeps its traceback. Standard library only: the device path imports it.
"""


class KwsError(ValueError):
    """Base of every error caused by user input."""


class ConfigError(KwsError):
    """A configuration value is out of range or a saved config does not fit this code."""


class AudioError(KwsError):
    """A file could not be used as audio."""


class DatasetError(KwsError):
    """A dataset folder cannot be used."""


class CheckpointError(KwsError):
    """A checkpoint is missing, unreadable or from another config."""


class ModelError(KwsError):
    """An ONNX model is missing, unreadable or lacks this tool's metadata."""


class SynthError(KwsError):
    """A TTS engine is missing or failed."""


class StreamError(KwsError):
    """An audio device or stream cannot be used."""


class FetchError(KwsError):
    """A download failed or its archive is not what was expected."""
