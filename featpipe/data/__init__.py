"""Small data files featpipe ships as package data, each naming its source and licence.

- ``tspm_text_prompts.json``: TSPM's declarative prompt for each of MUSIC-AVQA's 33 question
  templates (read through :mod:`featpipe.data.tspm`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=None)
def load_json(name: str) -> Any:
    """The parsed JSON data file ``name`` of this package."""
    return json.loads(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))
