"""Errors raised for bad input. Every message names the offending file and what is wrong with it."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: an unreadable, inconsistent or unsupported file.

    Args:
        path: the file or folder at fault.
        problem: what is wrong, in words a user can act on.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class VolumeError(DataError):
    """A volume file (NIfTI, DICOM, cache entry) is unreadable or inconsistent."""


class SlideError(DataError):
    """A whole-slide image or tile folder is unreadable, not pyramidal, lacks MPP or tissue."""
