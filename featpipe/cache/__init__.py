"""The HDF5 embedding cache: one writer (:class:`CacheWriter`), any number of readers (:func:`open_cache`)."""

from .reader import Cache, FeatureArray, FeatureInfo, open_cache
from .layout import CacheError
from .writer import CacheWriter, same_source, source_stat

__all__ = ["Cache", "CacheError", "CacheWriter", "FeatureArray", "FeatureInfo", "open_cache",
           "same_source", "source_stat"]
