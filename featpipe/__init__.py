"""featpipe: decode music videos once, extract aligned embeddings into one HDF5 cache.

Data flow: videos -> :mod:`featpipe.decode` -> :mod:`featpipe.extractors` (+ :mod:`featpipe.models`)
-> :mod:`featpipe.run` (the Dask run) -> :mod:`featpipe.cache` -> ``heads`` and :mod:`featpipe.interop`;
:mod:`featpipe.text` adds question embeddings, :mod:`featpipe.synth` makes test data. Other projects
read the cache through :func:`open_cache` (docs/architecture.md is the map).
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# The application layer, cli.py and heads/, sits beside this package at the top of the
# repository and is imported as featpipe.cli and featpipe.heads. An installed wheel has them
# inside this folder (setup.py); in a source checkout (editable install, or PYTHONPATH) the
# repository root joins the package's path instead, ahead of any other install's mapping.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "heads")) and os.path.isfile(os.path.join(_root, "setup.py")) \
        and os.path.isfile(os.path.join(_root, "heads", "__init__.py")):
    __path__.append(_root)
del _root

__all__ = ["__version__", "open_cache"]


def __getattr__(name: str):
    # Lazy, so `import featpipe` stays cheap for workers and the CLI.
    if name == "open_cache":
        from .cache import open_cache

        return open_cache
    raise AttributeError(name)
