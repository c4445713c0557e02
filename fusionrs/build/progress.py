"""One progress display per build stage: units or parts done / total, rows, rate, ETA, and for
captions the dollars spent so far. On a terminal the line updates in place; in a log (CI, `ray
job logs`) it is printed at most every `every_s` seconds and once at the end of the stage."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stage: str, total: int, unit: str = "parts", stream=None, every_s: float = 15.0):
        self.stage, self.total, self.unit = stage, total, unit
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = 0.25 if self.tty else every_s
        self.done, self.rows, self.usd = 0, 0, None
        self.t0 = self.last = time.time()

    def update(self, done: int = 1, rows: int = 0, usd: float | None = None) -> None:
        self.done += done
        self.rows += rows
        if usd is not None:
            self.usd = (self.usd or 0.0) + usd
        if time.time() - self.last >= self.every_s:
            self._show()

    def close(self) -> None:
        self._show(final=True)

    def line(self) -> str:
        dt = max(time.time() - self.t0, 1e-9)
        rate = self.rows / dt
        left = (self.total - self.done) * dt / self.done if self.done else 0.0
        parts = [f"[{self.stage}] {self.done}/{self.total} {self.unit}", f"{self.rows:,} rows", f"{rate:,.1f} rows/s"]
        parts.append(f"ETA {_clock(left)}" if self.done < self.total else f"done in {_clock(dt)}")
        if self.usd is not None:
            parts.append(f"${self.usd:,.4f} spent")
        return " · ".join(parts)

    def _show(self, final: bool = False) -> None:
        self.last = time.time()
        if self.tty:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
