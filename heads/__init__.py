"""Heads: small models trained on a featpipe cache, reading it only through featpipe.open_cache.

Installed as ``featpipe.heads`` (the repository keeps it at the top, beside ``featpipe/``).
File-level entry points are in :mod:`.api`: ``train_head``, ``evaluate``, ``predict`` and
``run_avqa_experiment`` (clip classifiers and the Music AVQA head with its question-only
baseline). The models themselves are scikit-learn-style estimators on plain arrays in
:mod:`.estimators`. All cache access is in :mod:`.data`; docs/heads.md describes inputs, the
weight-free question encoding, checkpoints and the report format.
"""
