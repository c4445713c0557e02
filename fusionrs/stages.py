"""The stage interface shared by CPU and GPU translators and by all captioners.

A stage is a plain callable over a batch (a dict of equal-length numpy arrays / lists), so the
same object runs inside a Ray Data actor pool, in a plain loop, and in a unit test. Its
`identity()` is recorded in the manifest and is part of the stage's fingerprint: change the
model, the prompt or a sampling parameter and that stage's outputs are recomputed.
"""

from __future__ import annotations

from typing import Any, Protocol

# ir_status / ir_caption_status values shared by all backends.
IR_OK = "ok"
IR_NOT_SELECTED = "not_selected"


class Translator(Protocol):
    """RGB → infrared-style. In: sample_id, rgb_jpeg, caption, source, source_record_id.
    Out: + ir_jpeg (None on failure), ir_status ("ok" or a reason code)."""

    def identity(self) -> dict[str, Any]: ...

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]: ...


class Captioner(Protocol):
    """(IR image, original caption) → IR-aware caption.

    In: sample_id, ir_jpeg, caption (+ rgb_jpeg). Out: + ir_aware_caption (None on failure),
    ir_caption_raw_status ("ok" or "failed:<code>"), ir_caption_cost_usd (the row's price),
    ir_caption_new_cost_usd (paid in this run), ir_caption_requests, ir_caption_cache_hits.
    """

    def identity(self) -> dict[str, Any]: ...

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]: ...


def make_translator(cfg) -> Translator:
    backend = cfg.translate.backend
    if backend == "pseudo_ir":
        from .translate.pseudo_ir import PseudoIRTranslator

        return PseudoIRTranslator(cfg.translate)
    if backend == "diffv2ir":
        from .storage import Storage
        from .translate.diffv2ir.translator import DiffV2IRTranslator

        return DiffV2IRTranslator(cfg.translate, Storage.from_config(cfg.storage))
    raise NotImplementedError(f"translate.backend={backend!r} is not available")


def make_captioner(cfg, storage=None, limiter=None) -> Captioner:
    """`limiter`: a shared RateLimiter Ray actor handle (the build makes one); None = local."""
    backend = cfg.caption.backend
    if backend == "cues":
        from .caption.cues import CueCaptioner

        return CueCaptioner()
    if backend == "openai":
        from .caption.openai_api import OpenAICaptioner
        from .storage import Storage, join

        storage = storage or Storage.from_config(cfg.storage)
        cache = cfg.caption.cache or join(cfg.output, "_cache", "captions")
        return OpenAICaptioner(cfg.caption, cfg.ir_filter, storage, cache, limiter)
    raise NotImplementedError(f"caption.backend={backend!r} is not available")
