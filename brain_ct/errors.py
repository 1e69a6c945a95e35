"""Errors raised by :mod:`brain_ct`.

Every message says what was received, what is accepted and how to fix it, so the
CLI and the app can show it to a person as it is, without a traceback.
"""

from __future__ import annotations


class BrainCTError(Exception):
    """Base class of every error this package raises on purpose; its text is never empty."""

    def __str__(self) -> str:
        # An API client must never see an empty reason ("error": null): say at least what failed.
        return (
            super().__str__() or f"{type(self).__name__}: the input could not be read (no reason was given)"
        )


class InvalidInputError(BrainCTError, ValueError):
    """The input (a file, bytes, an array or a parameter) cannot be read as a head CT."""


class NotHeadCTError(InvalidInputError):
    """The image decodes, but does not look like an axial head-CT slice.

    Callers can skip this check with ``allow_unverified=True`` (CLI ``--allow-unverified``,
    the app's "unusual slice" checkbox) for unusual but genuine slices.
    """


class TooLargeError(InvalidInputError):
    """A readable upload refused for its size: over the upload budget (:mod:`brain_ct.limits`).

    The message says the limit in the user's terms and how to raise it where the user runs it.
    """


class ModelLoadError(BrainCTError):
    """A model id or folder cannot be loaded, or is not a brain-CT hemorrhage model."""
