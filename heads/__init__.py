"""Heads: small models trained on a featpipe cache, reading it only through featpipe.open_cache.

Entry points are in :mod:`heads.api`: ``train_head``, ``evaluate``, ``predict`` and
``run_avqa_experiment`` (clip classifiers and the Music AVQA head with its question-only
baseline). All cache access is in :mod:`heads.data`; docs/heads.md describes inputs, the
weight-free question encoding, checkpoints and the report format.
"""
