"""Heads: small models trained on a featpipe cache, reading it only through featpipe.open_cache."""
