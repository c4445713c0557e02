"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, with fault
injection. It checks what a real provider checks (auth header, model, image parts) and answers
with an IR-aware caption built from the prompt's original caption.

    with FakeOpenAI(api_key="k", model="m") as srv:       # srv.base_url → http://127.0.0.1:PORT/v1
        srv.faults_for("harbor", ["429:1", "500"])         # next requests whose caption has "harbor"
        srv.pay_after = 10                                 # 402 after 10 completions
        srv.delay_s = 0.2                                  # latency of every answer

Faults: "429[:retry_after_s]", "429date[:s]" (Retry-After as an HTTP date), "408", "500", "502",
"503", "400", "402", "hang", "error200", "badjson", "empty", "finish_error", "fenced" (success
wrapped in prose and a code fence), "colour" (a caption the filter must reject).

The answer depends on the image it receives (its mean grey level is part of the caption), so a
client that hands one image's paid answer to another image is caught. Every request is logged
with the caption, the number of images and each image's size.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import re
import threading
import time
from collections import defaultdict

import numpy as np
from aiohttp import web
from PIL import Image

COLOUR = re.compile(r"\b(?:red|green|blue|yellow|orange|purple|pink|brown|golden|gold|turquoise)\b", re.I)


class FakeOpenAI:
    def __init__(self, api_key: str = "test-key", model: str | tuple = "qwen/qwen2.5-vl-72b-instruct",
                 delay_s: float = 0.0):
        self.api_key, self.delay_s = api_key, delay_s
        self.models = (model,) if isinstance(model, str) else tuple(model)  # routes it serves
        self.model = self.models[0]
        self.pay_after: int | None = None
        self.hang_s = 30.0
        self.cost = 0.0005
        self._faults: dict[str, list[str]] = defaultdict(list)
        self._global: list[str] = []
        self.requests: list[dict] = []  # one per request: caption, fault, status, time
        self.completions = 0
        self.problems: list[str] = []  # protocol violations seen (should stay empty)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0

    # -- control ----------------------------------------------------------------------
    def faults_for(self, caption_substring: str, faults: list[str]) -> None:
        with self._lock:
            self._faults[caption_substring] += list(faults)

    def fault_next(self, faults: list[str]) -> None:
        with self._lock:
            self._global += list(faults)

    def requests_for(self, substring: str) -> list[dict]:
        return [r for r in self.requests if substring in r["caption"]]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def _cleanup():
            await self._runner.cleanup()
        fut = asyncio.run_coroutine_threadsafe(_cleanup(), self._loop)
        try:
            fut.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- protocol ---------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        t = time.time()
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._log("", "auth", 401, t)
            return web.json_response({"error": {"code": 401, "message": "No auth credentials found"}}, status=401)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": {"code": 400, "message": "invalid JSON"}}, status=400)
        caption, problem, images = self._check(body)
        if problem:
            self.problems.append(problem)
            self._log(caption, "bad_request", 400, t)
            return web.json_response({"error": {"code": 400, "message": problem}}, status=400)
        fault = self._next_fault(caption)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fault is None and self.pay_after is not None and self.completions >= self.pay_after:
            fault = "402"
        status, resp = await self._answer(fault, caption, body, images)
        self._log(caption, fault or "ok", status, t, images)
        return resp

    def _check(self, body: dict) -> tuple[str, str, list]:
        if body.get("model") not in self.models:
            return "", f"unknown model {body.get('model')!r}", []
        try:
            content = body["messages"][0]["content"]
            text = next(p["text"] for p in content if p.get("type") == "text")
            urls = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
        except (KeyError, IndexError, StopIteration, TypeError):
            return "", "messages[0].content must hold a text part and image_url parts", []
        m = re.search(r"Original caption:\n(.*?)\n\nOutput JSON schema", text, re.S)
        caption = m.group(1).strip() if m else ""
        if not m:
            return caption, "prompt lacks the original caption section", []
        if not urls:
            return caption, "no image part", []
        images = []
        for url in urls:
            if not url.startswith("data:image/jpeg;base64,"):
                return caption, "image is not a base64 JPEG data URL", []
            data = base64.b64decode(url.split(",", 1)[1])
            if data[:2] != b"\xff\xd8":
                return caption, "image payload is not a JPEG", []
            images.append(Image.open(io.BytesIO(data)).convert("L"))
        return caption, "", images

    def _next_fault(self, caption: str) -> str | None:
        with self._lock:
            for key, queue in self._faults.items():
                if key in caption and queue:
                    return queue.pop(0)
            if self._global:
                return self._global.pop(0)
        return None

    async def _answer(self, fault: str | None, caption: str, body: dict, images: list):
        def err(status, code=None, headers=None):
            return status, web.json_response({"error": {"code": code or status, "message": f"injected {status}"}},
                                             status=status, headers=headers)
        if fault and fault.startswith("429date"):
            wait = float(fault.split(":", 1)[1]) if ":" in fault else 1.0
            return err(429, headers={"Retry-After": email.utils.formatdate(time.time() + wait, usegmt=True)})
        if fault and fault.startswith("429"):
            ra = fault.split(":", 1)[1] if ":" in fault else "1"
            return err(429, headers={"Retry-After": ra})
        if fault in ("408", "500", "502", "503", "400", "402"):
            return err(int(fault))
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return err(504)
        if fault == "error200":
            return 200, web.json_response({"error": {"code": 502, "message": "provider returned error"}})
        if fault == "badjson":
            return 200, web.Response(text='{"choices": [{"message": {"content": "trunc', content_type="application/json")
        ir_caption = self.ir_caption(caption, images[0])
        if fault == "colour":
            ir_caption = "Red roofs appear bright with sharp outlines while the dark water has low texture."
        content = json.dumps({"ir_aware_caption": ir_caption})
        finish = "stop"
        if fault == "fenced":
            content = f"Here is the caption:\n```json\n{content}\n```\nHope this helps."
        if fault == "empty":
            content = ""
        if fault == "finish_error":
            finish = "error"
        with self._lock:
            if content and finish == "stop":
                self.completions += 1
        return 200, web.json_response({
            "id": "gen-1", "model": body["model"], "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940,
                      **({"cost": self.cost} if self.cost is not None else {})}})

    @staticmethod
    def ir_caption(caption: str, image: Image.Image | None = None) -> str:
        scene = COLOUR.sub("", caption).strip().rstrip(".")
        scene = re.sub(r"\s+", " ", scene) or "An aerial scene"
        level = f" at a mean grey level of {image_level(image)} percent" if image is not None else ""
        return (f"{scene[:1].upper()}{scene[1:]}, shown in grayscale{level}: bright structures stand out with sharp "
                f"outlines while dark, low-texture regions fill the rest.")

    def _log(self, caption, fault, status, t0, images=()):
        with self._lock:
            self.requests.append({"caption": caption, "fault": fault, "status": status, "t": t0,
                                  "image_sizes": [im.size for im in images]})


def image_level(image: Image.Image) -> int:
    """The image's mean grey level in percent: what the answer says about the image it saw."""
    return int(round(float(np.asarray(image.convert("L"), np.float32).mean()) / 2.55))


def main() -> None:
    """Run the server in its own process (benchmarks): prints the port, serves until killed."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--api-key", default="test-key")
    ap.add_argument("--model", default="qwen/qwen2.5-vl-72b-instruct")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--no-cost", action="store_true", help="omit usage.cost: the client prices tokens")
    a = ap.parse_args()
    srv = FakeOpenAI(api_key=a.api_key, model=a.model, delay_s=a.latency)
    if a.no_cost:
        srv.cost = None
    srv.start()
    print(srv.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
