"""The activation cache on disk: format, writer, reader (see :mod:`revelio.cache.format`)."""

from revelio.cache.format import find_cells
from revelio.cache.reader import ActivationCache
from revelio.cache.writer import CacheWriter, write_cache
from revelio.errors import CacheError

__all__ = ["ActivationCache", "CacheError", "CacheWriter", "find_cells", "write_cache"]
