"""Build reports computed from the written output (never from what the build meant to write):
the paper's Table 2 (composition) and Table 3 (IR-aware subset) layouts, reason counts, a
leakage audit, `stats.md` and the dataset card `README.md`."""

from __future__ import annotations

from collections import Counter, defaultdict

from fusionrs.build.split import cross_split_groups
from fusionrs.dataset.card import write_card
from fusionrs.dataset.load import read_table
from fusionrs.dataset.schema import IR_CAPTION_ACCEPTED, IR_CAPTION_NOT_SELECTED, SPLITS

TRIPLET_STAT_COLUMNS = ["sample_id", "source", "split", "group_id", "caption_status", "ir_status",
                        "ir_caption_status", "ir_caption_cost_usd", "image_note", "is_eval_representative"]


def table2(rows) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
    for src, sp in rows:
        out[src][sp] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def write_reports(cfg, storage, layout, manifest: dict) -> dict:
    t = read_table(cfg.output, TRIPLET_STAT_COLUMNS, "triplets", storage)
    r = read_table(cfg.output, ["source", "stage", "reason"], "rejects", storage)
    tri = t.to_pydict() if t is not None else {c: [] for c in TRIPLET_STAT_COLUMNS}
    rej = r.to_pydict() if r is not None else {"source": [], "stage": [], "reason": []}
    composition = table2(zip(tri["source"], tri["split"]))
    sel = [i for i, s in enumerate(tri["ir_caption_status"]) if s != IR_CAPTION_NOT_SELECTED]
    acc = [i for i in sel if tri["ir_caption_status"][i] == IR_CAPTION_ACCEPTED]
    iraware_selected = table2((tri["source"][i], tri["split"][i]) for i in sel)
    iraware_accepted = table2((tri["source"][i], tri["split"][i]) for i in acc)
    stats = {
        "counts": {
            "triplets": len(tri["sample_id"]), "rejects": len(rej["reason"]),
            "table2_composition": composition,
            "table3_iraware_selected": iraware_selected,
            "table3_iraware_accepted": iraware_accepted,
            "reject_reasons": dict(sorted(Counter(f"{s}:{x}" for s, x in zip(rej["stage"], rej["reason"])).items())),
            "caption_status": dict(sorted(Counter(tri["caption_status"]).items())),
            "ir_caption_status": dict(sorted(Counter(tri["ir_caption_status"]).items())),
            "image_notes": dict(sorted(Counter(x for x in tri["image_note"] if x).items())),
            "eval_representatives": {s: sum(1 for sp, e in zip(tri["split"], tri["is_eval_representative"]) if e and sp == s)
                                     for s in ("val", "test")},
            "cross_split_groups_in_output": cross_split_groups(tri["group_id"], tri["split"]),
            "api_cost_usd": round(float(sum(x or 0.0 for x in tri["ir_caption_cost_usd"])), 6),
        }
    }
    md = render_stats_md(stats["counts"], manifest)
    storage.write_text(layout.file("stats.md"), md)
    write_card(cfg.output, storage, stats["counts"], manifest, md)  # README.md and assets/grid.png
    return stats


def md_table2(t: dict) -> str:
    lines = ["| Source | Total | Train | Val | Test |", "|---|---|---|---|---|"]
    tot = {s: 0 for s in SPLITS}
    for src, c in t.items():
        lines.append(f"| {src} | {sum(c.values()):,} | {c['train']:,} | {c['val']:,} | {c['test']:,} |")
        for s in SPLITS:
            tot[s] += c[s]
    lines.append(f"| Total | {sum(tot.values()):,} | {tot['train']:,} | {tot['val']:,} | {tot['test']:,} |")
    return "\n".join(lines)


def md_table3(t: dict) -> str:
    srcs = sorted(t)
    lines = ["| Split | Total | " + " | ".join(srcs) + " |", "|---" * (len(srcs) + 2) + "|"]
    for s in SPLITS:
        vals = [t[x][s] for x in srcs]
        lines.append(f"| IR-aware {s} | {sum(vals):,} | " + " | ".join(f"{v:,}" for v in vals) + " |")
    return "\n".join(lines)


def _md_counts(d: dict) -> str:
    return "\n".join(f"| {k} | {v:,} |" for k, v in d.items()) or "| (none) | 0 |"


def render_stats_md(c: dict, manifest: dict) -> str:
    return f"""# Build statistics

Computed from the written `triplets/` and `rejects/`.

## Composition (paper Table 2 layout)
{md_table2(c['table2_composition'])}

## IR-aware captions: accepted after filtering (paper Table 3 layout)
{md_table3(c['table3_iraware_accepted']) if c['table3_iraware_accepted'] else '(none selected)'}

Selected for captioning:
{md_table3(c['table3_iraware_selected']) if c['table3_iraware_selected'] else '(none selected)'}

## Rejects by stage and reason
| stage:reason | rows |
|---|---|
{_md_counts(c['reject_reasons'])}

## Caption status
| status | rows |
|---|---|
{_md_counts(c['caption_status'])}

## IR-aware caption status
| status | rows |
|---|---|
{_md_counts(c['ir_caption_status'])}

## Image normalisation notes
| note | rows |
|---|---|
{_md_counts(c['image_notes'])}

Groups crossing splits in the output: **{c['cross_split_groups_in_output']}**.
Evaluation representatives: val {c['eval_representatives']['val']:,}, test {c['eval_representatives']['test']:,}.
API cost of IR-aware captions: ${c['api_cost_usd']:.4f}.
"""


def console_summary(cfg, manifest: dict, seconds: float) -> str:
    """What `fusionrs build` prints at the end."""
    if manifest["status"] != "completed":
        return (f"\nstatus {manifest['status']}: {len(manifest['pending_parts'])} parts pending; rerun the same "
                f"command to continue (nothing done is redone). Ledger: fusionrs cost {cfg.output}")
    c = manifest["counts"]
    return (f"\nbuilt {c['triplets']:,} triplets, {c['rejects']:,} rejects in {seconds:.1f}s\n"
            f"outputs under {cfg.output}: triplets/ rejects/ manifest.json stats.md README.md config.yaml ledger/\n"
            f"cost: fusionrs cost {cfg.output}")
