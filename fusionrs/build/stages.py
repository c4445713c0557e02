"""The stage interface shared by CPU and GPU translators and by all captioners.

A stage is a plain callable over a batch (a dict of equal-length lists), so the same object runs
inside a Ray Data actor pool, in a plain loop, and in a unit test. A stage's identity — recorded
in the manifest and part of its fingerprint — is a pure function of the resolved config (and,
for a model folder, of the model's own metadata file): never of the machine that computes it. A
driver on a CPU head and actors on GPUs agree on it, so a rerun from either reuses the same work.
"""

from __future__ import annotations

from typing import Any, Protocol

from fusionrs.build.caption import cues, openai_api
from fusionrs.build.translate import pseudo_ir
from fusionrs.build.translate.diffv2ir import translator as diffv2ir
from fusionrs.core.storage import Storage, join


class Translator(Protocol):
    """RGB → infrared-style. In: sample_id, rgb_jpeg, caption, source, source_record_id.
    Out: + ir_jpeg (None on failure), ir_status ("ok" or a reason code)."""

    def identity(self) -> dict[str, Any]: ...

    def runtime(self) -> dict[str, Any]:
        """Where this instance runs (device, dtype): reported per IR file, never fingerprinted."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]: ...


class Captioner(Protocol):
    """(IR image, original caption) → IR-aware caption.

    In: sample_id, ir_jpeg, caption (+ rgb_jpeg). Out: + ir_aware_caption (None on failure),
    ir_caption_raw_status ("ok" or "failed:<code>"), ir_caption_cost_usd (the row's price),
    ir_caption_new_cost_usd (paid in this run), ir_caption_requests, ir_caption_cache_hits,
    ir_caption_tokens_in, ir_caption_tokens_out.
    """

    def identity(self) -> dict[str, Any]: ...

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]: ...


def translator_identity(cfg, storage: Storage) -> dict[str, Any]:
    t = cfg.translate
    if t.backend == "pseudo_ir":
        return pseudo_ir.identity(t)
    if t.backend == "diffv2ir":
        return diffv2ir.identity(t, diffv2ir.model_meta(t, storage))
    raise NotImplementedError(f"translate.backend={t.backend!r} is not available")


def captioner_identity(cfg) -> dict[str, Any]:
    c = cfg.caption
    if c.backend == "cues":
        return cues.identity()
    if c.backend == "openai":
        return openai_api.identity(c)
    raise NotImplementedError(f"caption.backend={c.backend!r} is not available")


def make_translator(cfg, storage: Storage) -> Translator:
    t = cfg.translate
    if t.backend == "pseudo_ir":
        return pseudo_ir.PseudoIRTranslator(t)
    if t.backend == "diffv2ir":
        return diffv2ir.DiffV2IRTranslator(t, storage)
    raise NotImplementedError(f"translate.backend={t.backend!r} is not available")


def make_captioner(cfg, storage: Storage, limiter=None) -> Captioner:
    """`limiter`: a shared RateLimiter Ray actor handle (the build makes one); None = local."""
    c = cfg.caption
    if c.backend == "cues":
        return cues.CueCaptioner()
    if c.backend == "openai":
        cache = c.cache or join(cfg.output, "_cache", "captions")
        return openai_api.OpenAICaptioner(c, cfg.ir_filter, storage, cache, limiter)
    raise NotImplementedError(f"caption.backend={c.backend!r} is not available")
