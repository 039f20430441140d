"""Finding the videos to process: files, folders (recursive, by extension) or lists of paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".wmv")
LIST_EXTENSIONS = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class VideoInput:
    video_id: str  # the file stem, as MUSIC-AVQA names videos
    path: str


class InputError(Exception):
    """An input argument that names nothing usable."""


def _from_list(path: Path) -> list[Path]:
    out = []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not UTF-8 text (a list holds one path per line, in UTF-8)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def discover(inputs: list[str], extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> tuple[list[VideoInput], list[tuple[str, str]]]:
    """Expand ``inputs`` into videos, sorted by path; also ``(path, reason)`` for rejects.

    A path named explicitly (argument or list line) is kept whatever its extension, so a bad
    file fails visibly instead of being skipped. Two files with the same stem would collide
    in the cache: the second is rejected with a reason.
    """
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in extensions))
        elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
            paths.extend(_from_list(p))
        elif p.exists():
            paths.append(p)
        else:
            raise InputError(f"{item}: no such file or folder")
    videos: list[VideoInput] = []
    rejects: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for p in paths:
        vid = p.stem
        if vid in seen:
            if seen[vid] != str(p.resolve()):
                rejects.append((str(p), f"video id {vid!r} already used by {seen[vid]}"))
            continue
        seen[vid] = str(p.resolve())
        if not _utf8(str(p)):  # a name of bytes that are no UTF-8: it could not be stored as a video id
            rejects.append((str(p).encode("utf-8", "backslashreplace").decode(), "its name is not UTF-8; rename it"))
            continue
        if not p.is_file():
            rejects.append((str(p), "listed file does not exist"))
            continue
        videos.append(VideoInput(vid, str(p)))
    return videos, rejects


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
