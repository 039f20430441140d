"""The cache's one error type (its own module, so the writer, the reader and the checks share it)."""


class CacheError(Exception):
    """The cache cannot be used as asked; the message says why in one line."""
