"""The prepared token dir: what is in it, and the one error every data problem raises.

A prepared dir holds ``train.bin`` and ``heldout.bin`` (memory-mapped tokens) and
``meta.json`` (written last, so a dir with a meta file is complete).
"""

from __future__ import annotations

META_FILE = "meta.json"
SPLITS = ("train", "heldout")  # <split>.bin each
FORMAT_VERSION = 1


class DataError(ValueError):
    """A missing, unreadable or unusable data source; the message names it."""
