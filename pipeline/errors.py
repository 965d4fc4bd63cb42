"""Errors a user can act on. The CLI prints their message (no traceback) and exits non-zero."""


class LensgraphError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class ModelUnavailable(LensgraphError):
    """Weights could not be found locally nor downloaded."""


class IndexNotFound(LensgraphError):
    """The named index does not exist in the database."""


class EncoderMismatch(LensgraphError):
    """An index was asked to work with encoders other than those that built it."""


class ImageChanged(LensgraphError):
    """A file no longer holds the image indexed under its id (edited or replaced since indexing)."""


class ImageLoadError(LensgraphError):
    """One image could not be read. Indexing reports it and goes on."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
