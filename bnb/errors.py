"""User-facing errors: each renders as one readable line naming the file and the problem."""
from __future__ import annotations


class BnbError(Exception):
    """Base of every error caused by the user's input (exit code 2 on the command line)."""

    def __init__(self, message: str, path=None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self):
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        return where + self.message


class ModelError(BnbError):
    """A network that cannot be loaded, is unsupported, or disagrees with onnxruntime."""


class SpecError(BnbError):
    """A VNN-LIB file that cannot be parsed or does not fit the network."""


class ConfigError(BnbError):
    """An unknown key, an ill-typed value or an unreadable configuration file."""


def unreadable(exc: OSError, path) -> "ModelError":
    """The one-line ModelError for a model file that cannot be opened (missing, or another OS error)."""
    if isinstance(exc, FileNotFoundError):
        return ModelError("no such file", path)
    return ModelError(f"cannot read: {exc.strerror}", path)
