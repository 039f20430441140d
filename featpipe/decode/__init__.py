"""Decode a video once with PyAV into chunks of aligned segments, honestly.

Segment k covers ``[k/fps, (k+1)/fps)``. For every segment the decoder delivers the frames on
screen at the positions the extractors asked for (0.5 = the centre, MUSIC-AVQA's convention),
upright and at their displayed size, and the audio, resampled once to 48 kHz with its channels
kept. Audio and video are decoded by two lazy sources, each over its own demuxer, so memory
holds a chunk of segments, never the whole video.

Modules, one job each: :mod:`.params` (parameters, the error type), :mod:`.streams` (probing, streams,
their choice, orientation), :mod:`.packets` (tolerant packet decoding and what each stream
delivered), :mod:`.video` and :mod:`.audio` (the two sources on the true timeline),
:mod:`.timeline` (chunks, and the per-segment validity masks of what each stream covered).
"""

from .packets import StreamTally
from .params import DecodeError, DecodeParams
from .streams import MediaInfo, Orientation, probe
from .timeline import (TAIL_KEEP, DecodeStats, Verdict, count_segments, covered_segments, iter_chunks, merge_needs,
                       rows_before, segment_mask)
from .video import frame_size, use_seek

__all__ = ["DecodeError", "DecodeParams", "DecodeStats", "MediaInfo", "Orientation", "StreamTally", "TAIL_KEEP",
           "Verdict", "count_segments", "covered_segments", "frame_size", "iter_chunks", "merge_needs", "probe",
           "rows_before", "segment_mask", "use_seek"]
