"""`openai` captioner: IR-aware captions from any OpenAI-compatible chat-completions API
(OpenRouter by default, vLLM, ...), async, rate-limited, fault-tolerant, cached, cost-tracked.

- Bounded in flight per actor (`caption.concurrency`); one global pace for all actors (requests
  and tokens per minute) kept by a shared limiter (a Ray actor when wired by the build, a local
  object otherwise), which also holds the 402 circuit breaker, the global Retry-After pause and
  the spend for `caption.budget_usd`.
- Retries with exponential backoff and full jitter, honouring `Retry-After` / `retry-after-ms`:
  429, 408, 409, 5xx, connection errors and timeouts. 400/401/403 are final. 402 trips the
  breaker: completed work is kept, the rest is reported as not captioned.
- An HTTP 200 whose body carries an error, empty content or finish_reason "error" is a failure.
- Never pay twice: every paid response is written to the cache, keyed by the request's
  fingerprint (model, prompt text, decoding params, image bytes, attempt), *before* the row moves
  on. A retried batch, a restarted actor or a rerun reads it back instead of asking again.
- The API key is read from the environment variable named by `caption.api_key_env` at request
  time. It is never stored on this object, in the config, a log line, an exception or a file.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import io
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass

import aiohttp
from PIL import Image

from fusionrs.build.caption.cache import ResponseCache
from fusionrs.build.caption.ir_filter import ir_caption_reasons
from fusionrs.core.storage import Storage
from fusionrs.dataset.schema import CAPTION_RAW_OK, IR_CAPTION_FAILED

log = logging.getLogger("fusionrs.caption.openai")
VERSION = "openai-1"

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529}
FINAL_STATUS = {400, 401, 403, 404, 413, 422}
MAX_RETRY_AFTER_S = 120.0


# ---------------------------------------------------------------------------------------
# The shared limiter: pacing, global pause, breaker, budget.


class RateLimiter:
    """Reserve-a-slot pacing for requests/min and tokens/min, plus shared run state.

    Plain synchronous methods, so the same class serves locally and as a Ray actor
    (`ray.remote(RateLimiter)`), where every actor of the caption pool shares one instance.
    """

    def __init__(self, requests_per_minute: float = 0.0, tokens_per_minute: float = 0.0, budget_usd: float = 0.0):
        self.req_interval = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self.tok_rate = tokens_per_minute / 60.0 if tokens_per_minute > 0 else 0.0
        self.budget = budget_usd
        self.next_req = 0.0
        self.next_tok = 0.0
        self.paused_until = 0.0
        self.spent = 0.0
        self.tripped = ""  # reason the breaker opened, "" while closed
        self.requests = 0

    def acquire(self, est_tokens: int = 0) -> tuple[str, float]:
        """('ok', seconds to wait before sending) or (stop reason, 0)."""
        if self.tripped:
            return self.tripped, 0.0
        if self.budget and self.spent >= self.budget:
            return "budget_exhausted", 0.0
        now = time.time()
        start = max(now, self.paused_until)
        if self.req_interval:
            start = max(start, self.next_req)
            self.next_req = start + self.req_interval
        if self.tok_rate and est_tokens:
            start = max(start, self.next_tok)
            self.next_tok = start + est_tokens / self.tok_rate
        self.requests += 1
        return "ok", max(0.0, start - now)

    def pause(self, seconds: float) -> None:
        """A 429 with Retry-After applies to the key: every actor backs off."""
        self.paused_until = max(self.paused_until, time.time() + seconds)

    def trip(self, reason: str) -> None:
        self.tripped = self.tripped or reason

    def add_cost(self, usd: float) -> None:
        self.spent += usd

    def state(self) -> dict:
        return {"spent_usd": self.spent, "tripped": self.tripped, "requests": self.requests}


class _LocalLimiterHandle:
    """Same call shape as a Ray actor handle (`await handle.method.remote(...)`)."""

    class _Method:
        def __init__(self, fn):
            self._fn = fn

        async def remote(self, *a, **k):
            return self._fn(*a, **k)

    def __init__(self, limiter: RateLimiter):
        self._l = limiter
        for name in ("acquire", "pause", "trip", "add_cost", "state"):
            setattr(self, name, self._Method(getattr(limiter, name)))


# ---------------------------------------------------------------------------------------
# Requests, responses, parsing.


class ApiError(Exception):
    def __init__(self, code: str, retryable: bool, retry_after: float | None = None, requests: int = 0):
        super().__init__(code)
        self.code, self.retryable, self.retry_after, self.requests = code, retryable, retry_after, requests


def parse_retry_after(headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return min(MAX_RETRY_AFTER_S, float(ms) / 1000.0)
        except ValueError:
            pass
    v = headers.get("retry-after")
    if not v:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(v)))
    except ValueError:
        try:
            return min(MAX_RETRY_AFTER_S, max(0.0, email.utils.parsedate_to_datetime(v).timestamp() - time.time()))
        except (TypeError, ValueError):
            return None


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.I | re.M)
_KEY = re.compile(r'"ir_aware_caption"\s*:\s*"((?:[^"\\]|\\.)*)"', re.S)


def parse_caption(text: str) -> str | None:
    """Tolerant: code fences, text around the JSON, single-key JSON, a bare key:value."""
    if not text:
        return None
    t = _FENCE.sub("", text.strip()).strip()
    candidates = [t]
    a, b = t.find("{"), t.rfind("}")
    if 0 <= a < b:
        candidates.append(t[a:b + 1])
    for c in candidates:
        try:
            obj = json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("ir_aware_caption"), str):
            return obj["ir_aware_caption"].strip() or None
    m = _KEY.search(t)
    if m:
        try:
            return json.loads(f'"{m.group(1)}"').strip() or None
        except json.JSONDecodeError:
            return m.group(1).strip() or None
    return None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the JPEG's SOF marker; None if it can't be read this way."""
    i, n = 2, len(data)
    if data[:2] != b"\xff\xd8":
        return None
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + length
    return None


def data_url(jpeg: bytes, max_side: int) -> str:
    size = jpeg_size(jpeg)  # per request: a header scan, not a decoder
    if size is None or max(size) > max_side:
        img = Image.open(io.BytesIO(jpeg))
    if max(size or img.size) > max_side:
        s = max_side / max(img.size)
        img = img.convert("RGB").resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        jpeg = buf.getvalue()
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


@dataclass
class Outcome:
    caption: str | None
    status: str  # "ok" or "failed:<code>"
    cost: float  # what this row's responses cost (cached ones included): the per-row price
    new_cost: float  # what this run paid for it (0 when all came from the cache)
    requests: int  # HTTP requests sent in this run for this row (all attempts and retries)
    cache_hits: int
    tokens_in: int = 0  # tokens paid in this run
    tokens_out: int = 0


def identity(c) -> dict:
    return {"backend": "openai", "version": VERSION, "model": c.model, "base_url": c.base_url,
            "prompt_sha256": hashlib.sha256(c.prompt.encode()).hexdigest(), "temperature": c.temperature,
            "max_tokens": c.max_tokens, "include_rgb": c.include_rgb, "image_max_side": c.image_max_side,
            "regenerate": c.regenerate}


class OpenAICaptioner:
    """Captioner over a batch; `limiter` is a Ray actor handle (or None for a local limiter)."""

    def __init__(self, cfg, filter_cfg, storage: Storage, cache_uri: str, limiter=None):
        self.cfg, self.filter_cfg, self.storage, self.cache_uri = cfg, filter_cfg, storage, cache_uri
        self.cache = ResponseCache(storage, cache_uri)
        self.limiter = limiter or _LocalLimiterHandle(RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, cfg.budget_usd))
        self.stats = {"requests": 0, "cache_hits": 0, "cost_usd": 0.0}

    def identity(self) -> dict:
        return identity(self.cfg)

    # -- fingerprint and cache --------------------------------------------------------
    def request_body(self, caption: str, ir: bytes, rgb: bytes | None, attempt: int) -> dict:
        c = self.cfg
        content: list[dict] = [{"type": "text", "text": c.prompt.replace("{original_caption}", caption or "")},
                               {"type": "image_url", "image_url": {"url": data_url(ir, c.image_max_side)}}]
        if c.include_rgb and rgb:
            content.append({"type": "image_url", "image_url": {"url": data_url(rgb, c.image_max_side)}})
        body = {"model": c.model, "messages": [{"role": "user", "content": content}],
                "temperature": round(c.temperature + 0.1 * attempt, 3), "max_tokens": c.max_tokens,
                "usage": {"include": True}}  # OpenRouter usage accounting: usage.cost in the reply
        if attempt:
            body["seed"] = attempt
        return body

    @staticmethod
    def serialize(body: dict) -> tuple[bytes, str]:
        """The request bytes and their fingerprint: the exact bytes sent are what is hashed."""
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return payload, hashlib.sha256(payload).hexdigest()

    # -- batch entry point --------------------------------------------------------------
    def __call__(self, batch: dict) -> dict:
        rgb = batch.get("rgb_jpeg") or [None] * len(batch["sample_id"])
        outs = asyncio.run(self.caption_all(list(batch["sample_id"]), list(batch["ir_jpeg"]), list(batch["caption"]), list(rgb)))
        return {**batch, "ir_aware_caption": [o.caption for o in outs], "ir_caption_raw_status": [o.status for o in outs],
                "ir_caption_cost_usd": [o.cost for o in outs], "ir_caption_new_cost_usd": [o.new_cost for o in outs],
                "ir_caption_requests": [o.requests for o in outs], "ir_caption_cache_hits": [o.cache_hits for o in outs],
                "ir_caption_tokens_in": [o.tokens_in for o in outs], "ir_caption_tokens_out": [o.tokens_out for o in outs]}

    async def caption_all(self, ids, irs, caps, rgbs) -> list[Outcome]:
        # Responses committed by any process so far (a retried batch finds its earlier answers).
        await asyncio.to_thread(self.cache.refresh)
        await self.cache.start()
        try:
            return await self._caption_all(ids, irs, caps, rgbs)
        finally:
            await self.cache.close()

    async def _caption_all(self, ids, irs, caps, rgbs) -> list[Outcome]:
        # The semaphore bounds HTTP exchanges in flight, not rows: a row waiting for its response
        # to become durable does not hold a request slot.
        self._slots = asyncio.Semaphore(self.cfg.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.cfg.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            return await asyncio.gather(*(self.caption_one(session, ids[i], irs[i], caps[i], rgbs[i])
                                          for i in range(len(ids))))

    async def caption_one(self, session, sample_id, ir, caption, rgb) -> Outcome:
        cost = new_cost = 0.0
        requests = hits = tok_in = tok_out = 0
        last: Outcome | None = None
        for attempt in range(self.cfg.regenerate + 1):
            payload, fp = self.serialize(self.request_body(caption, ir, rgb, attempt))
            rec = self.cache.get(fp)
            if rec is None:
                try:
                    rec, n = await self.request(session, payload)
                except ApiError as e:
                    return Outcome(None, f"{IR_CAPTION_FAILED}{e.code}", cost, new_cost, requests + e.requests, hits, tok_in, tok_out)
                requests += n
                rec.update(sample_id=sample_id, fingerprint=fp, attempt=attempt, created_unix=int(time.time()))
                await self.cache.put(fp, rec)  # durable before the row moves on: never pay twice
                new_cost += rec["cost_usd"]
                tok_in += int(rec["usage"].get("prompt_tokens") or 0)
                tok_out += int(rec["usage"].get("completion_tokens") or 0)
            else:
                hits += 1
            cost += rec["cost_usd"]
            cap = parse_caption(rec.get("content", ""))
            last = Outcome(cap, CAPTION_RAW_OK if cap else f"{IR_CAPTION_FAILED}unparseable", cost, new_cost, requests, hits, tok_in, tok_out)
            if cap and (attempt == self.cfg.regenerate or not ir_caption_reasons(cap, caption, self.filter_cfg)):
                return last  # accepted, or no attempt left to spend on it
        return last

    # -- one HTTP exchange, with retries ----------------------------------------------------
    async def request(self, session, payload: bytes) -> tuple[dict, int]:
        c = self.cfg
        url = c.base_url.rstrip("/") + "/chat/completions"
        est = c.max_tokens + 800  # rough prompt + image tokens, for tokens/min pacing
        sent = 0
        last_code = "unknown"
        for retry in range(c.max_retries + 1):
            async with self._slots:
                verdict, wait = await self.limiter.acquire.remote(est)
                if verdict != "ok":
                    raise ApiError("stopped_after_402" if verdict == "payment_required" else verdict, False, requests=sent)
                if wait:
                    await asyncio.sleep(wait)
                key = os.environ.get(c.api_key_env, "")
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "X-Title": "fusionrs"}
                sent += 1
                try:
                    async with session.post(url, data=payload, headers=headers) as resp:
                        text = await resp.text()
                        result = self._interpret(resp.status, resp.headers, text)
                except ApiError as e:
                    result = e
                except asyncio.TimeoutError:
                    result = ApiError("timeout", True)
                except Exception as e:  # connection reset, refused, DNS, ...: name the type only
                    result = ApiError(f"connection_{type(e).__name__}", True)
                if isinstance(result, dict):
                    # Spent the moment the answer arrives, inside the slot, so the budget holds.
                    await self.limiter.add_cost.remote(result["cost_usd"])
                    return result, sent
            last_code = result.code
            if result.code == "payment_required":
                await self.limiter.trip.remote("payment_required")
                raise ApiError("payment_required", False, requests=sent)
            if not result.retryable or retry == c.max_retries:
                raise ApiError(result.code if not result.retryable else f"retries_exhausted:{last_code}", False, requests=sent)
            if result.retry_after is not None:
                await self.limiter.pause.remote(result.retry_after)
                delay = result.retry_after
            else:
                delay = random.uniform(0, min(30.0, 0.5 * 2 ** retry))  # full jitter
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _interpret(self, status: int, headers, text: str):
        """A paid-response dict, or an ApiError (never containing headers or the key)."""
        if status == 402:
            return ApiError("payment_required", False)
        if status != 200:
            retry = status in RETRYABLE_STATUS or (status >= 500 and status not in FINAL_STATUS)
            return ApiError(f"http_{status}", retry, parse_retry_after(headers) if retry else None)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            return ApiError("bad_json", True)
        if not isinstance(doc, dict):
            return ApiError("bad_json", True)
        if doc.get("error"):
            err = doc["error"] if isinstance(doc["error"], dict) else {}
            code = err.get("code")
            if code == 402:
                return ApiError("payment_required", False)
            retry = code in RETRYABLE_STATUS or (isinstance(code, int) and code >= 500) or code is None
            return ApiError(f"provider_error_{code}", retry)
        choices = doc.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        if choice.get("finish_reason") == "error":
            return ApiError("finish_reason_error", True)
        content = (choice.get("message") or {}).get("content") or ""
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not content.strip():
            return ApiError("empty_content", True)
        usage = doc.get("usage") or {}
        cost = usage.get("cost")
        if not isinstance(cost, (int, float)):
            cost = (usage.get("prompt_tokens", 0) * self.cfg.price_in_per_mtok
                    + usage.get("completion_tokens", 0) * self.cfg.price_out_per_mtok) / 1e6
        return {"content": content, "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
                "cost_usd": float(cost), "model": doc.get("model", self.cfg.model)}
