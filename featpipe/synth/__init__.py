"""Synthetic MUSIC-AVQA: music videos with known instruments, timing and loudness, and exact answers.

``make_dataset(out_dir, videos, seed)`` writes videos, MUSIC-AVQA question files and the
ground-truth scenes; see docs/synth.md. Modules: :mod:`.scene` (what happens),
:mod:`.sound` and :mod:`.picture` (rendering), :mod:`.writer` (mp4), :mod:`.facts` and
:mod:`.questions` (templates and answers), :mod:`.balance` (which questions to ask), :mod:`.report`.
"""

from .dataset import SynthError, make_dataset, write_video
from .report import SynthReport, format_report
from .scene import Scene, sample_scene

__all__ = ["SynthError", "SynthReport", "Scene", "format_report", "make_dataset", "sample_scene", "write_video"]
