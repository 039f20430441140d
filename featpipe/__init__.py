"""featpipe: decode music videos once, extract aligned embeddings into one HDF5 cache.

Data flow: videos -> :mod:`featpipe.decode` -> :mod:`featpipe.extractors` -> :mod:`featpipe.cache`
-> ``heads``. Other projects read the cache through :func:`open_cache`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "open_cache"]


def __getattr__(name: str):
    # Lazy, so `import featpipe` stays cheap for workers and the CLI.
    if name == "open_cache":
        from .cache import open_cache

        return open_cache
    raise AttributeError(name)
