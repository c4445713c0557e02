"""`cues`: an offline IR-aware captioner from cues measured on the IR image.

It keeps the scene semantics of the original caption (minus RGB colour words, which an
infrared-style image cannot support) and adds what it measures: intensity distribution,
contrast, where the bright and dark regions are, and edge density. Deterministic, free, and
written to pass the same filter as API captions; the `openai` backend replaces it in real runs.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from fusionrs.build.caption.ir_filter import STRICT_V3_PATTERNS
from fusionrs.core.lexicon import RGB_COLOR_WORDS
from fusionrs.dataset.schema import CAPTION_RAW_OK, IR_CAPTION_FAILED

VERSION = "cues-1"
_REGIONS = [["upper left", "top", "upper right"], ["left side", "center", "right side"],
            ["lower left", "bottom", "lower right"]]


def measure_cues(ir: Image.Image) -> dict:
    a = np.asarray(ir.convert("L"), dtype=np.float32) / 255.0
    gy, gx = np.gradient(a)
    edges = np.hypot(gx, gy) > 0.08
    bright, dark = a > 0.7, a < 0.3
    return {
        "mean": float(a.mean()), "std": float(a.std()),
        "bright_fraction": float(bright.mean()), "dark_fraction": float(dark.mean()),
        "bright_region": _where(bright), "dark_region": _where(dark),
        "edge_density": float(edges.mean()),
    }


def _where(mask: np.ndarray) -> str | None:
    if mask.mean() < 0.01:
        return None
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    spread = max(ys.std() / h, xs.std() / w)
    if spread > 0.25:
        return "across the scene"
    return "in the " + _REGIONS[min(2, int(ys.mean() / h * 3))][min(2, int(xs.mean() / w * 3))]


def scene_phrase(caption: str) -> str:
    words = [w for w in caption.strip().rstrip(".").split() if w.lower().strip(",;") not in RGB_COLOR_WORDS]
    text = " ".join(words)
    for _, pat in STRICT_V3_PATTERNS:  # never carry a physical claim over from the original
        text = pat.sub("", text)
    text = re.sub(r"\s+", " ", text).strip(" ,;")
    return text[:1].upper() + text[1:] if text else "An aerial scene"


def compose(caption: str, c: dict) -> str:
    contrast = "high" if c["std"] > 0.25 else "moderate" if c["std"] > 0.15 else "low"
    outlines = ("dense, sharp structural outlines" if c["edge_density"] > 0.15 else
                "clear structural outlines" if c["edge_density"] > 0.05 else "few, soft outlines")
    bright = (f"bright structures stand out {c['bright_region']}" if c["bright_region"]
              else "no strongly bright structures appear")
    dark = (f"dark, low-texture regions lie {c['dark_region']}" if c["dark_region"]
            else "dark regions are scarce")
    return (f"{scene_phrase(caption)}, seen in grayscale infrared style: {bright} and {dark}, "
            f"with {contrast} intensity contrast and {outlines}.")


def identity() -> dict:
    return {"backend": "cues", "version": VERSION}


class CueCaptioner:
    def identity(self) -> dict:
        return identity()

    def __call__(self, batch: dict) -> dict:
        caps, status, cost = [], [], []
        for ir, caption in zip(batch["ir_jpeg"], batch["caption"]):
            try:
                caps.append(compose(caption or "", measure_cues(Image.open(io.BytesIO(ir)))))
                status.append(CAPTION_RAW_OK)
            except Exception as e:
                caps.append(None)
                status.append(f"{IR_CAPTION_FAILED}{type(e).__name__}")
            cost.append(0.0)
        zeros = [0] * len(caps)
        return {**batch, "ir_aware_caption": caps, "ir_caption_raw_status": status, "ir_caption_cost_usd": cost,
                "ir_caption_new_cost_usd": cost, "ir_caption_requests": zeros, "ir_caption_cache_hits": zeros,
                "ir_caption_tokens_in": zeros, "ir_caption_tokens_out": zeros}
