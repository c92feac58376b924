"""The one error every dataset failure becomes (re-exported by `trainer.data`)."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset is missing, empty or corrupt; the message names the folder or file and the fix."""
