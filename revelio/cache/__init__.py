"""The activation cache on disk: format, writer, reader (see :mod:`revelio.cache.format`)."""

from revelio.cache.format import CacheError, cell_path, find_cells
from revelio.cache.reader import ActivationCache
from revelio.cache.writer import CacheWriter, write_cache

__all__ = ["ActivationCache", "CacheError", "CacheWriter", "cell_path", "find_cells", "write_cache"]
