"""Releases: one backbone's grid of SAEs, probes, statistics, exemplars and metrics, built, carded,
pushed to the Hub and loaded back with :func:`load_release`."""

from revelio.release.load import Release, load_release

__all__ = ["Release", "load_release"]
