"""Exceptions of `socratic.data`, in one place so callers can catch them without importing readers."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are in none of the places we looked.

    The message names every place searched and how to get the data, so that a user who sees it
    in a CLI traceback knows the next command to run.
    """


class DataFormatError(ValueError):
    """A data file exists but is not what its format promises (bad magic number, truncated, ...)."""
