"""The folder layouts other projects' dataloaders read, as data (see docs/interop.md).

One :class:`Layout` per project: which cache features (found by name or spec pattern and row
shape, so a renamed extractor output needs one edit here) go to which folder, with which file
shape, and which text tables go to which per-question folders. ``export.py`` and ``importer.py``
only interpret these tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

SEGMENTS = 60  # the field's rule: 60 one-second segments, short videos repeat the last second


@dataclass(frozen=True)
class Source:
    """A cache feature (or text table) found by name pattern, or by its provenance spec, and row shape.

    ``shape`` is the row shape it must have (empty: any); ``exclude`` are name patterns that
    never match (e.g. the word-level table when looking for the sentence table); when several
    match, the one matching a ``prefer`` pattern is taken (else it is ambiguous).
    """

    names: tuple[str, ...]
    specs: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()
    exclude: tuple[str, ...] = ()
    describe: str = ""
    prefer: tuple[str, ...] = ()

    def narrow(self, found: list[str]) -> list[str]:
        """``found`` cut to the single preferred match, when there is one."""
        preferred = [n for n in found if any(fnmatchcase(n, p) for p in self.prefer)]
        return preferred if len(found) > 1 and len(preferred) == 1 else found

    def matches(self, name: str, spec: str, shape: tuple[int, ...], by_size: bool = False) -> bool:
        if any(fnmatchcase(name, p) for p in self.exclude):
            return False
        if self.shape:
            if by_size:  # text tables may store (77, D) rows flattened
                if _size(shape) != _size(self.shape):
                    return False
            elif tuple(shape) != tuple(self.shape):
                return False
        return any(fnmatchcase(name, p) for p in self.names) or any(fnmatchcase(spec, p) for p in self.specs)


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


@dataclass(frozen=True)
class Recipe:
    """Cache features that make one file row: ``one`` feature as is, or ``cls+tokens``:
    a (D,) embedding (the CLS token in embedding space) put in front of (N, D) patch tokens."""

    sources: tuple[Source, ...]
    combine: str = "one"


@dataclass(frozen=True)
class VideoFolder:
    """``<folder>/<video_id>.npy`` of ``shape`` (rows first; ``None`` rows: as cached)."""

    folder: str
    shape: tuple[int | None, ...]
    recipes: tuple[Recipe, ...]
    import_as: str
    modality: str
    flag: str
    extract: str
    dtype: str = "float32"


@dataclass(frozen=True)
class TextFolder:
    """``<folder>/<question_id>.npy`` of ``shape``, from one text table keyed by question id."""

    folder: str
    shape: tuple[int, ...]
    table: Source
    flag: str
    extract: str
    required: bool = True
    dtype: str = "float32"


@dataclass(frozen=True)
class Layout:
    name: str
    project: str
    videos: tuple[VideoFolder, ...]
    texts: tuple[TextFolder, ...] = ()
    segments: int | None = SEGMENTS


# -- the cache features the layouts use (adjust names here when extractors are renamed) --------
VGGISH = Source(("vggish", "vggish-*"), ("vggish*",), (128,), describe="VGGish (T, 128)")
RES18_14 = Source(("resnet18-14x14*",), ("resnet18-14x14*",), (512, 14, 14),
                  describe="ResNet-18 14x14 maps (T, 512, 14, 14)")
TOME14 = Source(("tome14*",), ("tome14*",), (14, 1024), describe="ToMe ViT-L/16-384 tokens (T, 14, 1024)")
CLIP_B32 = Source(("clip-ViT-B-32-*",), ("clip:ViT-B-32*",), (512,), describe="CLIP ViT-B/32 image embedding (T, 512)")
CLIP_B32_TOKENS = Source(("clip-ViT-B-32-*-tokens",), (), (49, 512),
                         describe="CLIP ViT-B/32 patch tokens in embedding space (T, 49, 512)")
CLIP_B32_50 = Source(("clip-ViT-B-32-*-patch50", "clip-ViT-B-32-*-tokens", "clip-ViT-B-32-*-cls-tokens"), (),
                     (50, 512), describe="CLIP ViT-B/32 CLS + 49 patch tokens (T, 50, 512)")
CLIP_L14_336 = Source(("clip-ViT-L-14-336-*",), ("clip:ViT-L-14-336*",), (768,),
                      describe="CLIP ViT-L/14@336 image embedding (T, 768)")

# Text tables (/texts/<encoder>): sentence tables are named after the image feature (text.py);
# `encode-text --field-tables` adds <encoder>-qst (the question as the field's scripts encode it,
# preferred over the plain table), <encoder>-words and <encoder>-qaprompt.
WORDS = ("*-words", "*-word", "*-words-*")
PROMPTS = ("*-qaprompt", "*-qaprompt-*", "*-prompt", "*-prompts")
TXT_B32 = Source(("clip-ViT-B-32-*",), ("clip:ViT-B-32*",), (512,), WORDS + PROMPTS,
                 "CLIP ViT-B/32 question embeddings (512,)", prefer=("*-qst",))
TXT_B32_WORDS = Source(("clip-ViT-B-32-*-words", "clip-ViT-B-32-*-word"), (), (77, 512),
                       describe="CLIP ViT-B/32 word-level question tokens (77, 512)")
TXT_L14 = Source(("clip-ViT-L-14-336-*",), ("clip:ViT-L-14-336*",), (768,), WORDS + PROMPTS,
                 "CLIP ViT-L/14@336 question embeddings (768,)", prefer=("*-qst",))
TXT_L14_PROMPT = Source(("clip-ViT-L-14-336-*qaprompt*",), (), (768,),
                        describe="CLIP ViT-L/14@336 embeddings of TSPM's declarative qa prompts (768,)")

# What adds each feature: shown when a cache lacks one, and each is run by tests/test_field_sets.py
# (parsed by the CLI, its outputs matched against the table that names it).
X_VGGISH = "featpipe extract VIDEOS -o CACHE --fps 1 --max-seconds 60 --audio vggish"
X_RES18 = "featpipe extract VIDEOS -o CACHE --fps 1 --max-seconds 60 --visual resnet18-14x14"
X_TOME = "featpipe extract VIDEOS -o CACHE --fps 1 --max-seconds 60 --visual tome14"  # = tome:vit_large_patch16_384
X_B32 = "featpipe extract VIDEOS -o CACHE --fps 1 --max-seconds 60 --visual clip:ViT-B-32-quickgelu/openai --tokens"
X_L14 = "featpipe extract VIDEOS -o CACHE --fps 1 --max-seconds 60 --visual clip:ViT-L-14-336-quickgelu/openai"
X_TXT_B32 = ("featpipe encode-text CACHE --questions Q.json --text-encoder clip:ViT-B-32-quickgelu/openai"
             " --field-tables")
X_TXT_L14 = ("featpipe encode-text CACHE --questions Q.json --text-encoder clip:ViT-L-14-336-quickgelu/openai"
             " --field-tables")


def _one(src: Source) -> tuple[Recipe, ...]:
    return (Recipe((src,)),)


AVST = Layout(
    "avst", "GeWu-Lab/MUSIC-AVQA (net_grd_avst)",
    videos=(
        VideoFolder("vggish", (SEGMENTS, 128), _one(VGGISH), "vggish", "audio", "--audio_dir", X_VGGISH),
        VideoFolder("res18_14x14", (SEGMENTS, 512, 14, 14), _one(RES18_14), "resnet18-14x14", "visual",
                    "--video_res14x14_dir", X_RES18),
    ),
)

PSTP_NET = Layout(
    "pstp-net", "GeWu-Lab/PSTP-Net",
    videos=(
        VideoFolder("vggish", (SEGMENTS, 128), _one(VGGISH), "vggish", "audio", "--audios_feat_dir", X_VGGISH),
        VideoFolder("clip_patch-level_vit_b32", (SEGMENTS, 50, 512),
                    (Recipe((CLIP_B32_50,)), Recipe((CLIP_B32, CLIP_B32_TOKENS), "cls+tokens")),
                    "clip-ViT-B-32-imported-patch50", "visual", "--clip_vit_b32_dir", X_B32),
    ),
    texts=(
        TextFolder("clip_qst", (1, 512), TXT_B32, "--clip_qst_dir", X_TXT_B32),
        TextFolder("clip_word", (1, 77, 512), TXT_B32_WORDS, "--clip_word_dir", X_TXT_B32),
    ),
)

TSPM = Layout(
    "tspm", "GeWu-Lab/TSPM",
    videos=(
        VideoFolder("vggish", (SEGMENTS, 128), _one(VGGISH), "vggish", "audio", "--audios_feat_dir", X_VGGISH),
        VideoFolder("clip_feats/frame_1fps_ViT-L14@336px", (SEGMENTS, 768), _one(CLIP_L14_336),
                    "clip-ViT-L-14-336-imported", "visual", "--visual_feat_dir", X_L14),
        VideoFolder("ToMe_feat/tome14", (SEGMENTS, 14, 1024), _one(TOME14), "tome14", "visual",
                    "--visual_patch_dir", X_TOME),
        # The loader opens this folder but the model never uses it (nets/net.py forward): VGGish rows.
        VideoFolder("ToMe_feat/audio_tome14", (SEGMENTS, 128), _one(VGGISH), "vggish", "audio",
                    "--audios_patch_dir", X_VGGISH),
    ),
    texts=(
        TextFolder("clip_feats/qst_ViT-L14@336px", (1, 768), TXT_L14, "--qst_feat_dir", X_TXT_L14),
        TextFolder("clip_feats/qaPrompt_ViT-L14@336px", (1, 768), TXT_L14_PROMPT, "--qst_prompt_dir",
                   X_TXT_L14),
    ),
)

QA_TIGER = Layout(
    "qa-tiger", "AIM-SKKU/QA-TIGER",
    videos=(
        VideoFolder("feats/vggish", (SEGMENTS, 128), _one(VGGISH), "vggish", "audio", "data.audio_feat", X_VGGISH),
        VideoFolder("feats/frame_ViT-L14@336px", (SEGMENTS, 768), _one(CLIP_L14_336),
                    "clip-ViT-L-14-336-imported", "visual", "data.video_feat", X_L14),
        VideoFolder("feats/visual_tome14", (SEGMENTS, 14, 1024), _one(TOME14), "tome14", "visual",
                    "data.patch_feat", X_TOME),
    ),
    texts=(  # only its configs/tspm/vitl14.py reads these; written when the tables exist
        TextFolder("feats/qst_ViT-L14@336px", (1, 768), TXT_L14, "data.quest_feat", X_TXT_L14, required=False),
        TextFolder("feats/qaPrompt_ViT-L14@336px", (1, 768), TXT_L14_PROMPT, "data.prompt_feat",
                   X_TXT_L14, required=False),
    ),
)

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (AVST, PSTP_NET, TSPM, QA_TIGER)}


def generic_layout(features: dict[str, str], texts: dict[str, str], length: int | None) -> Layout:
    """``--layout generic``: ``--feature FEATURE=FOLDER`` and ``--text TABLE=FOLDER`` as given."""
    videos = tuple(VideoFolder(folder, (length,), _one(Source((name,))), name, "", "--feature", "")
                   for name, folder in features.items())
    txt = tuple(TextFolder(folder, (), Source((name,)), "--text", "featpipe encode-text") for name, folder in texts.items())
    return Layout("generic", "any loader of <id>.npy folders", videos, txt, segments=length)
