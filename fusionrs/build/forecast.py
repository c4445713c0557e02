"""`fusionrs plan`: the run, priced before it is paid for.

    fusionrs plan --config fusionrs-600k --synthetic 600000 --json
    fusionrs plan --config configs/demo.yaml output=out/demo/build     # from a build's stage files

The driver's whole plan (joint groups, split, IR-aware subset: plan.make_plan, the code the build
runs) over either a build's own ingest and IR stage files, or N synthetic metadata rows with the
recipe's source mix and the duplicate structure of real collections (exact copies, pHash
near-duplicates within the radius in RGB and in IR, repeated captions as in RS5M). It prints the
split per source (paper Table 2 layout), group statistics, cross-split groups (must be 0), its own
peak RSS and seconds, and a cost forecast for the configured cluster from the rates table
(`configs/rates.yaml`, figures from docs/benchmarks.md) and the config's prices.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass

import numpy as np
import yaml

from fusionrs.build.fingerprints import stage_fingerprints
from fusionrs.build.plan import Plan, PlanInput, make_plan, read_plan_input
from fusionrs.build.readers import plan_units
from fusionrs.config.build import BuildConfig
from fusionrs.config.recipes import recipe
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import Layout
from fusionrs.dataset.schema import SPLITS

# Duplicate structure of the synthetic metadata: shares of rows, set after the official rc4
# audit (official implementation §3.2: 84,375 of 600,000 rows in RGB near-duplicate clusters,
# 34,268 in IR ones, 29,158 caption keys repeated).
RGB_NEAR_SHARE = 0.14
IR_NEAR_SHARE = 0.057
EXACT_COPY_SHARE = 0.01
REPEATED_CAPTION_SHARE = 0.10


@dataclass
class Rates:
    """Throughput per worker and API request sizes (configs/rates.yaml)."""

    translate_images_per_s: dict  # backend → images/s per GPU (or per CPU actor for pseudo_ir)
    caption_tokens_in: int
    caption_tokens_out: int
    caption_seconds_per_request: float
    source: str = ""

    @classmethod
    def load(cls, name: str = "rates") -> "Rates":
        d = yaml.safe_load(recipe(name).read_text())
        return cls(**{k: d[k] for k in ("translate_images_per_s", "caption_tokens_in", "caption_tokens_out",
                                          "caption_seconds_per_request")}, source=d.get("source", ""))


def synthetic_plan_input(cfg: BuildConfig, n: int, seed: int = 0) -> PlanInput:
    """N metadata rows: the recipe's source mix (split.counts totals, else equal shares) and
    realistic duplicate structure. Hashes are random 64-bit values; near-duplicates flip 1..r
    bits of their cluster's first hash; exact copies repeat a row's hashes; repeated captions
    reuse an earlier row's caption key."""
    rng = np.random.default_rng(seed)
    names = [s.name for s in cfg.sources]
    weights = np.array([sum(cfg.split.counts[s].values()) if s in cfg.split.counts else 1 for s in names], float)
    exact = weights / weights.sum() * n
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:  # largest remainders
        counts[k] += 1
    source = np.repeat(np.arange(len(names)), counts)
    rgb = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) | (rng.integers(0, 2, n, dtype=np.uint64) << 63)
    ir = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    captions = np.arange(n)
    r = max(1, cfg.dedup.near_radius)

    def near_clusters(hashes: np.ndarray, share: float) -> None:
        members = rng.permutation(n)[: int(share * n)]
        for cluster in np.array_split(members, max(1, len(members) // 2.5)):  # clusters of ~2-3 within a source mix
            first = hashes[cluster[0]]
            for m in cluster[1:]:
                bits = rng.choice(64, rng.integers(1, r + 1), replace=False)
                hashes[m] = first ^ np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64))

    near_clusters(rgb, RGB_NEAR_SHARE)
    near_clusters(ir, IR_NEAR_SHARE)
    copies = rng.permutation(n)[: int(EXACT_COPY_SHARE * n)]
    rgb[copies[1::2]] = rgb[copies[::2][: len(copies[1::2])]]
    repeated = rng.permutation(n)[: int(REPEATED_CAPTION_SHARE * n)]
    captions[repeated] = rng.choice(n, len(repeated))
    ids = [f"{names[s]}-{i:012x}" for i, s in enumerate(source)]
    rgb_hex = [f"{int(h):016x}" for h in rgb]
    return PlanInput(
        sample_id=ids, source=[names[s] for s in source], rgb_phash=rgb_hex,
        rgb_sha256=[hashlib.sha256(h.encode()).hexdigest()[:32] for h in rgb_hex],
        caption_key=[f"c{c}" for c in captions], ir_phash=[f"{int(h):016x}" for h in ir],
        ir_sha256=[f"i{int(h):016x}" for h in ir], part_index=np.zeros(n, np.int64))


def forecast(cfg: BuildConfig, translated: int, captioned: int, rates: Rates) -> dict:
    """GPU-hours, API requests, tokens and dollars, and wall hours for the configured pools."""
    t, c = cfg.translate, cfg.caption
    per_worker = rates.translate_images_per_s.get(t.backend, 0.0)
    gpus = t.num_gpus or 0.0
    worker_hours = translated / per_worker / 3600 if per_worker else float("nan")
    requests = captioned * (1 + 0.05 * c.regenerate)  # ~5% of captions are regenerated after the filter
    tok_in, tok_out = requests * rates.caption_tokens_in, requests * rates.caption_tokens_out
    api_usd = (tok_in * c.price_in_per_mtok + tok_out * c.price_out_per_mtok) / 1e6
    caption_rate = min(c.max_actors * c.concurrency / rates.caption_seconds_per_request,
                       (c.requests_per_minute or float("inf")) / 60)
    translate_wall = worker_hours / max(1, t.max_actors)
    caption_wall = requests / caption_rate / 3600 if captioned else 0.0
    out = {"translate_images": translated, "translate_worker_hours": round(worker_hours, 3),
           "translate_gpu_hours": round(worker_hours * gpus, 3),
           "translate_gpu_usd": round(worker_hours * gpus * cfg.cost.gpu_hour_usd, 2),
           "api_requests": int(requests), "api_tokens_in": int(tok_in), "api_tokens_out": int(tok_out),
           "api_usd": round(api_usd, 2), "wall_hours": round(translate_wall + caption_wall, 3),
           "rates": rates.source}
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_plan(cfg: BuildConfig, synthetic: int = 0, seed: int = 0) -> dict:
    """The plan and its forecast, as a JSON-able dict."""
    t0 = time.time()
    storage = Storage.from_config(cfg.storage)
    if synthetic:
        rows, source_of = synthetic_plan_input(cfg, synthetic, seed), "synthetic"
    else:
        units = [u for s in cfg.sources for u in plan_units(s, storage, cfg.ingest.records_per_unit)]
        fps = stage_fingerprints(cfg, storage)
        layout = Layout(cfg.output)
        parts = [p for u in units for p in _unit_parts(storage, layout, fps, u.unit_id)]
        if not parts:
            raise FileNotFoundError(f"no ingest and translate stage files under {cfg.output} for this config: run "
                                    f"the build (or use --synthetic N)")
        rows, _ = read_plan_input(cfg, storage, fps, parts)
        source_of = "stage files"
    plan = make_plan(rows, cfg)
    splits = split_table(rows.source, plan)
    return {"rows": len(rows.sample_id), "from": source_of, "splits": splits,
            "groups": plan.summary["dedup"], "cross_split_groups": plan.summary["cross_split_groups"],
            "split_shortfalls": plan.summary["split_shortfalls"], "iraware_selected": plan.summary["iraware_selected"],
            "forecast": forecast(cfg, len(rows.sample_id), plan.summary["iraware_selected"], Rates.load()),
            "driver_peak_rss_mib": round(peak_rss_mib(), 1), "seconds": round(time.time() - t0, 2)}


def _unit_parts(storage: Storage, layout: Layout, fps: dict, unit_id: str) -> list[str]:
    marker = layout.ingest_marker(fps["ingest"], unit_id)
    if not storage.exists(marker):
        return []
    parts = [p["part"] for p in json.loads(storage.read_bytes(marker))]
    return [p for p in parts if storage.exists(layout.ir(fps["translate"], p))]


def split_table(sources: list[str], plan: Plan) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for src, sp in zip(sources, plan.split):
        out.setdefault(src, {s: 0 for s in SPLITS})[sp] += 1
    return dict(sorted(out.items()))


def format_plan(p: dict) -> str:
    lines = [f"plan of {p['rows']:,} rows ({p['from']}) in {p['seconds']} s, driver peak RSS {p['driver_peak_rss_mib']} MiB",
             "", "| Source | Total | Train | Val | Test |", "|---|---|---|---|---|"]
    tot = {s: 0 for s in SPLITS}
    for src, c in p["splits"].items():
        lines.append(f"| {src} | {sum(c.values()):,} | {c['train']:,} | {c['val']:,} | {c['test']:,} |")
        for s in SPLITS:
            tot[s] += c[s]
    lines.append(f"| Total | {sum(tot.values()):,} | {tot['train']:,} | {tot['val']:,} | {tot['test']:,} |")
    g = p["groups"]
    lines += ["", f"groups: {g['groups']:,} ({g['multi_sample_groups']:,} with more than one sample, largest "
                  f"{g['largest_group']}); unions: RGB exact {g['exact_sha256_unions'] + g['exact_phash_unions']:,}, "
                  f"RGB near {g['near_unions']:,}, IR {g.get('ir_exact_sha256_unions', 0) + g.get('ir_exact_phash_unions', 0) + g.get('ir_near_unions', 0):,}, "
                  f"captions {g['caption_unions']:,}",
              f"cross-split groups: {p['cross_split_groups']}; held-out shortfalls: {p['split_shortfalls'] or 'none'}",
              f"IR-aware captions selected: {p['iraware_selected']:,}"]
    f = p["forecast"]
    lines += ["", "forecast (rates: " + (f["rates"] or "configs/rates.yaml") + "):",
              f"  translate: {f['translate_images']:,} images, {f['translate_gpu_hours']:,} GPU-hours "
              f"(${f['translate_gpu_usd']:,}), {f['translate_worker_hours']:,} worker-hours",
              f"  captions : {f['api_requests']:,} requests, {f['api_tokens_in']:,} + {f['api_tokens_out']:,} tokens, "
              f"${f['api_usd']:,}",
              f"  wall     : {f['wall_hours']:,} hours with the configured pools"]
    return "\n".join(lines)
