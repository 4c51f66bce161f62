"""Dataclass schemas of every JSON file revelio writes: read with ``from_json``/``read``, written
with ``to_json``/``write``, a malformed file refused with an :class:`~revelio.errors.ArtifactFormatError`
that names it. At the bottom layer, so writers and readers on any layer share one definition."""
