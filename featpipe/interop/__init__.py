"""Feeding other projects' training code from a cache, and bringing their features into one.

``featpipe export CACHE --layout NAME -o DIR`` writes the folders of ``<id>.npy`` that AVST,
PSTP-Net, TSPM or QA-TIGER read unmodified (:mod:`.layouts` holds the tables, :mod:`.export`
the writer); ``featpipe import DIR --layout NAME -o CACHE`` (or ``--feature NAME=FOLDER``) brings
such folders into a cache (:mod:`.importer`). See docs/interop.md.
"""

from .export import ExportError, ExportSummary, export, read_id_list
from .importer import ImportSetupError, ImportSource, ImportSummary, import_features, layout_sources
from .layouts import LAYOUTS, Layout, generic_layout

__all__ = ["ExportError", "ExportSummary", "ImportSetupError", "ImportSource", "ImportSummary", "LAYOUTS", "Layout",
           "export", "generic_layout", "import_features", "layout_sources", "read_id_list"]
