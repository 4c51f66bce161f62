"""The errors revelio raises: one base class, so callers can catch everything revelio refuses.

The library never exits the process: ``train/`` entry points turn a :class:`RevelioError` into
an exit message (:func:`revelio.cli.main`), the app into a message on the page. Subclasses of
``ValueError`` stay ``ValueError`` so code that caught the built-in keeps working.
"""

from __future__ import annotations


class RevelioError(Exception):
    """Anything revelio refuses to do, with a message that says what is wrong and what to do."""


class ConfigError(RevelioError, ValueError):
    """Settings that cannot work together or with the data (named by their config field)."""


class ArtifactFormatError(RevelioError, ValueError):
    """A saved artifact or JSON file is missing, corrupt, tampered with, or disagrees with its schema."""


class DatasetError(RevelioError, ValueError):
    """A dataset that cannot be used as asked (no labels, an unknown split, too few images)."""


class CacheError(RevelioError):
    """An activation cache that is missing, damaged, unfinished, or would be overwritten."""


class IncompleteRunError(RevelioError):
    """A resumable step whose earlier parts are not all there: rerun the same command to finish them."""
