"""Original-caption cleaning (paper appendix), every decision reason-coded.

Per sentence: strip boilerplate (stock photo, copyright, map source, URLs), then reject it if it
is empty, non-English, too short, too long, generic, content-free, or a weak RS5M caption.
Per sample: the first sentence that survives is the caption; if none does and the source has a
class label, the class-name fallback is used; otherwise the sample is a reject.

Language ID: py3langid (a maintained, offline fork of langid.py; numpy only, model in the
wheel, ~1 ms per caption). Short captions are hard for any identifier, so a caption whose words
are all in a small English vocabulary is English whatever the model says (docs/cleaning.md).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

from fusionrs.core.lexicon import BOILERPLATE_PATTERNS, CONTENT_WORDS, ENGLISH_WORDS, GENERIC_WORDS, tokens

# Sentence reason codes.
OK = "ok"
OK_STRIPPED = "ok_stripped_boilerplate"
OK_STRIPPED_CONTROL = "ok_stripped_control"  # control, zero-width or bidi-override characters removed
EMPTY = "empty"
BOILERPLATE_ONLY = "boilerplate_only"
NON_ENGLISH = "non_english"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
GENERIC = "generic"
NO_CONTENT = "no_content"
WEAK_RS5M = "weak_rs5m"

# Sample caption_status values.
STATUS_ORIGINAL = "original"
STATUS_ORIGINAL_STRIPPED = "original_stripped"
STATUS_FALLBACK = "fallback_class"  # written as "fallback_class:<reason of the first sentence>"
REJECT_NO_CAPTION = "no_usable_caption"


@dataclass
class CleanResult:
    caption: str | None  # the chosen caption (or fallback), None for a reject
    captions: list[str]  # all clean sentences
    status: str  # original | original_stripped | fallback_class:<why> | no_usable_caption:<why>
    sentence_reasons: list[str] = field(default_factory=list)  # one per raw sentence
    is_fallback: bool = False

    @property
    def rejected(self) -> bool:
        return self.caption is None


def strip_controls(text: str) -> tuple[str, bool]:
    """Control characters (Cc: NUL, ESC, ...) and format characters (Cf: zero-width spaces, bidi
    overrides such as U+202E that reorder what a reader sees) become spaces; ordinary whitespace
    stays. Returns (text, whether anything was removed)."""
    out = "".join(" " if unicodedata.category(c) in ("Cc", "Cf") and c not in "\t\n\r" else c for c in text)
    if out == text:
        return text, False
    return re.sub(r"\s+", " ", out), True


def normalize_caption(text: str) -> str:
    """The §3.4 normalization: NFKC, casefold, strip, non-word chars → space, collapse spaces."""
    t = unicodedata.normalize("NFKC", text).casefold().strip()
    t = re.sub(r"[^\w\s]", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def caption_key(text: str | None) -> str | None:
    """SHA-256 hex of the normalized caption, or None when it normalizes to nothing."""
    if not text:
        return None
    n = normalize_caption(text)
    return hashlib.sha256(n.encode("utf-8")).hexdigest() if n else None


class CaptionCleaner:
    """A plain callable; `clean(captions, source_format, class_name)` → CleanResult."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._langid = None

    def _identifier(self):
        if self._langid is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            # A relative MODEL_FILE resolves against the package's own data folder.
            self._langid = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return self._langid

    def strip_boilerplate(self, text: str) -> tuple[str, bool]:
        out, hits = text, 0
        for _, pat in BOILERPLATE_PATTERNS:
            out, n = pat.subn(" ", out)
            hits += n
        if not hits:
            return text.strip(), False
        out = re.sub(r"\s+", " ", out).strip(" \t\n,;:-|")
        return re.sub(r"\s+([.,;:])", r"\1", out), True

    def is_english(self, text: str) -> bool:
        letters = [c for c in text if c.isalpha()]
        if not letters:
            return False
        if sum(c.isascii() for c in letters) / len(letters) < 0.9:
            return False
        toks = tokens(text)
        known = sum(t in ENGLISH_WORDS for t in toks) / max(1, len(toks))
        if known >= 0.75:
            return True
        lang, prob = self._identifier().classify(text)
        if lang == "en":
            return True
        # Confident non-English, or a weak guess backed by mostly unknown words.
        return not (prob >= self.cfg.language_min_prob or known < 0.34)

    def sentence_reason(self, raw: str, source_format: str) -> tuple[str, str]:
        """(reason, cleaned text) for one raw sentence."""
        text, controls = strip_controls(unicodedata.normalize("NFKC", raw or ""))
        text = text.strip()
        if not text:
            return EMPTY, ""
        cleaned, stripped = self.strip_boilerplate(text)
        if not cleaned or not any(c.isalnum() for c in cleaned):
            return (BOILERPLATE_ONLY if stripped else EMPTY), ""
        if not self.is_english(cleaned):
            return NON_ENGLISH, cleaned
        if not tokens(cleaned):
            return (BOILERPLATE_ONLY if stripped else EMPTY), ""
        toks = tokens(cleaned)
        if len(toks) > self.cfg.max_words:
            return TOO_LONG, cleaned
        if all(t in GENERIC_WORDS or t.isdigit() for t in toks):
            return GENERIC, cleaned
        if len(toks) < self.cfg.min_words:
            return TOO_SHORT, cleaned
        content = sum(t in CONTENT_WORDS for t in toks)
        if content < self.cfg.min_content_words:
            return NO_CONTENT, cleaned
        if source_format == "rs5m_wds" and len(toks) < self.cfg.rs5m_min_words:
            return WEAK_RS5M, cleaned
        return (OK_STRIPPED if stripped else OK_STRIPPED_CONTROL if controls else OK), cleaned

    def clean(self, captions: list[str], source_format: str, class_name: str | None) -> CleanResult:
        reasons, kept = [], []
        first_ok_status = None
        for raw in captions or []:
            reason, text = self.sentence_reason(raw, source_format)
            reasons.append(reason)
            if reason in (OK, OK_STRIPPED, OK_STRIPPED_CONTROL):
                kept.append(text)
                if first_ok_status is None:
                    first_ok_status = STATUS_ORIGINAL if reason == OK else STATUS_ORIGINAL_STRIPPED
        why = reasons[0] if reasons else EMPTY
        if kept:
            return CleanResult(kept[0], kept, first_ok_status, reasons)
        if class_name:
            label = class_name.replace("_", " ").replace("-", " ").strip()
            fallback = self.cfg.fallback_template.format(class_name=label)
            return CleanResult(fallback, [fallback], f"{STATUS_FALLBACK}:{why}", reasons, is_fallback=True)
        return CleanResult(None, [], f"{REJECT_NO_CAPTION}:{why}", reasons)
