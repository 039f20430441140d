"""PyAV's API differences across the releases featpipe supports, handled in one place.

featpipe allows ``av>=18.0`` (pyproject.toml); CI installs the newest release on every run, and
``tests/test_dependencies.py`` checks each shim on the installed release, on the other side of
the break with stand-ins shaped like the older API, and the floor release end to end. See
docs/dependencies.md.
"""

from __future__ import annotations

from collections.abc import Mapping


def display_matrix_side_data(frame) -> object | None:
    """The frame's display-matrix side data (a buffer of nine int32), or None.

    Up to av 18.1.0 ``frame.side_data`` iterates over side-data objects carrying ``.type``;
    from 18.1.1 it is a Mapping whose iteration yields ``Type`` keys (``sd.type`` raised
    AttributeError on every video). Look the entry up by type where the container is a
    Mapping, and scan the objects otherwise.
    """
    from av.sidedata.sidedata import Type

    side = frame.side_data
    if isinstance(side, Mapping):
        return side.get(Type.DISPLAYMATRIX)
    for sd in side:
        if getattr(sd, "type", None) == Type.DISPLAYMATRIX:
            return sd
    return None
