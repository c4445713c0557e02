"""IR-aware caption quality filter: strict-v3 categories (official implementation §5.3) plus
length bounds, "repeats the original caption without IR cues" and "weak IR cues".

Returns "accepted" or "filtered:<code>+<code>..." with every matching code, in a fixed order.
"""

from __future__ import annotations

import re

from fusionrs.core.lexicon import IR_CUE_WORDS, tokens
from fusionrs.dataset.schema import IR_CAPTION_ACCEPTED, IR_CAPTION_FILTERED

# The seven strict-v3 patterns, verbatim, case-insensitive; a match removes the caption.
STRICT_V3_PATTERNS = [
    ("thermal_signature", re.compile(r"\bthermal signatures?\b", re.I)),
    ("heat", re.compile(r"\bheat(?:ed|ing)?\b|\bheat signatures?\b", re.I)),
    ("temperature", re.compile(r"\btemperatures?\b|\bhot(?:ter)?\b|\bcold(?:er)?\b|\bwarm(?!-up\b)(?:er)?\b", re.I)),
    ("emissivity_radiance", re.compile(r"\bemissiv\w*\b|\bradiance\b", re.I)),
    ("reflectivity", re.compile(r"\breflectiv\w*\b", re.I)),
    ("material_property", re.compile(r"\bmaterials?\b|\bmetallic\b|\bconductiv\w*\b|\bsurface propert(?:y|ies)\b", re.I)),
    ("rgb_color", re.compile(r"\b(?:red|green|blue|yellow|orange|purple|pink|brown|golden|gold|turquoise)\b", re.I)),
]

EMPTY = "empty"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
REPEATS_ORIGINAL = "repeats_original_without_ir_cues"
WEAK_IR_CUES = "weak_ir_cues"


def ir_caption_reasons(caption: str | None, original: str | None, cfg) -> list[str]:
    if not caption or not caption.strip():
        return [EMPTY]
    reasons = [name for name, pat in STRICT_V3_PATTERNS if pat.search(caption)]
    toks = tokens(caption)
    if len(toks) < cfg.min_words:
        reasons.append(TOO_SHORT)
    if len(toks) > cfg.max_words:
        reasons.append(TOO_LONG)
    cues = {t for t in toks if t in IR_CUE_WORDS}
    orig = set(tokens(original or ""))
    if orig:
        jaccard = len(set(toks) & orig) / len(set(toks) | orig)
        new_cues = cues - orig
        if jaccard >= cfg.max_overlap_without_cues and not new_cues:
            reasons.append(REPEATS_ORIGINAL)
    if len(cues) < cfg.min_cue_terms and REPEATS_ORIGINAL not in reasons:
        reasons.append(WEAK_IR_CUES)
    return reasons


def ir_caption_status(caption: str | None, original: str | None, cfg) -> str:
    reasons = ir_caption_reasons(caption, original, cfg)
    return IR_CAPTION_ACCEPTED if not reasons else IR_CAPTION_FILTERED + "+".join(reasons)
