"""What ``featpipe info`` shows: a cache's features, counts, timelines and provenance."""

from __future__ import annotations

from collections import Counter
from typing import Any

from . import open_cache
from .identity import describe_identity, fingerprint


def describe(path: str) -> dict[str, Any]:
    """A JSON-able description of the cache at ``path``."""
    with open_cache(path) as cache:
        feats = {}
        for name in cache.features:
            info = cache.info(name)
            counts = Counter()
            rows = 0
            for v in cache.videos:
                rec = cache.record(v)
                entry = rec.get("features", {}).get(name)
                if entry:
                    counts["videos"] += 1
                    rows += entry[1]
                    runs = rec.get("invalid", {}).get(name) or []
                    fill = sum(b - a for a, b in runs)
                    counts["decoded"] += (entry[2] if len(entry) > 2 else entry[1]) - fill
                    counts["fill"] += fill
                    counts["with_fill"] += bool(runs)
            prov = cache.provenance(name)
            feats[name] = {
                "spec": info.spec, "modality": info.modality, "shape": list(info.shape), "dtype": info.dtype,
                "videos": counts["videos"], "rows": rows, "decoded_rows": counts["decoded"],
                "fill_rows": counts["fill"], "videos_with_fill": counts["with_fill"],
                "timeline": {"hop": info.hop, "start": info.start, "window": info.window,
                             "on_segment_timeline": info.on_timeline},
                "weights": info.weights, "featpipe": prov.get("featpipe"), "layout": info.layout,
                "fingerprint": fingerprint(prov["identity"]) if prov.get("identity") else None,
                "identity": prov.get("identity"),
            }
        texts = {}
        for enc in cache.text_encoders:
            texts[enc] = {"texts": len(cache.text_items(enc))}
        return {"path": str(path), "schema_version": cache.schema_version, "timeline": cache.timeline,
                "videos": len(cache.videos), "features": feats, "texts": texts}


def format_description(desc: dict[str, Any]) -> str:
    tl = desc["timeline"]
    lines = [f"{desc['path']}: {desc['videos']} videos, schema {desc['schema_version']}, "
             f"segments of {tl.get('seg_len')} s (fps {tl.get('fps')}, max_seconds {tl.get('max_seconds')}, "
             f"pad {tl.get('pad')})"
             + (f"; beat timeline: {tl.get('beats_per_segment')} beat(s) per row, pooled from that grid"
                if tl.get("kind") == "beats" else "")]
    for name, f in desc["features"].items():
        t = f["timeline"]
        where = "segment timeline" if t["on_segment_timeline"] else "own timeline"
        at = ("rows are beat segments (each video's bounds)" if tl.get("kind") == "beats"
              else f"{where}: row i at {t['start']:g} + i*{t['hop']:g} s")
        fill = (f", {f['fill_rows']} fill rows inside {f['videos_with_fill']} videos (late starts, holes)"
                if f["fill_rows"] else "")
        lines.append(f"  {name}  [{f['modality']}] {tuple(f['shape'])} {f['dtype']}, {f['videos']} videos, "
                     f"{f['rows']} rows ({f['decoded_rows']} decoded{fill}); {at}")
        lines.append(f"      spec {f['spec']}, weights {f['weights']}")
        if f.get("fingerprint"):
            lines.append(f"      fingerprint {f['fingerprint']}: {describe_identity(f['identity'])}")
    for enc, t in desc["texts"].items():
        lines.append(f"  text {enc}: {t['texts']} texts")
    return "\n".join(lines)
