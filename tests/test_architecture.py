"""The floors' rules (docs/architecture.md), checked on the source: no import cycle among the
library's modules, each floor imports only the floors below it, and nothing in the library
imports the CLI or the repository's jobs/."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fusionrs"
# A floor may not import these floors at module level (dev/, demo and cli may import anything).
FORBIDDEN = {"core": {"config", "dataset", "build", "train", "eval", "dev"}, "config": {"dataset", "build", "train", "eval", "dev"},
             "dataset": {"build", "train", "eval", "dev"}, "build": {"train", "eval", "dev"},
             "train": {"build", "eval", "dev"}, "eval": {"build", "dev"}}
# Pure metrics that training's validation shares with evaluation (no training or build code in them).
SHARED_METRICS = {"fusionrs.eval.retrieval"}


def module_imports() -> dict[str, set[str]]:
    mods = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.parse(p.read_text()).body:  # module level: what importing the module imports
            if isinstance(node, ast.ImportFrom) and node.module:
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        mods[name] = deps
    return {m: {d for d in ds if d in mods or d.startswith("jobs")} for m, ds in mods.items()}


def test_no_import_cycle():
    mods, color, stack, cycles = module_imports(), {}, [], []

    def visit(m):
        color[m] = 1
        stack.append(m)
        for d in mods[m]:
            if d in mods and color.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d in mods and not color.get(d):
                visit(d)
        stack.pop()
        color[m] = 2

    for m in mods:
        if not color.get(m):
            visit(m)
    assert not cycles, cycles


def test_floors_import_only_the_floors_below_and_never_the_cli_or_jobs():
    bad = []
    for m, deps in module_imports().items():
        floor = m.split(".")[1] if "." in m else ""
        for d in deps:
            dfloor = d.split(".")[1] if d.startswith("fusionrs.") else d
            if (dfloor in FORBIDDEN.get(floor, ()) and d not in SHARED_METRICS) or (d == "fusionrs.cli" and m != "fusionrs.cli") or d.startswith("jobs"):
                bad.append((m, d))
    assert not bad, bad
