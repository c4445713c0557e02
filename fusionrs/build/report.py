"""Build reports computed from the written output (never from what the build meant to write):
the paper's Table 2 (composition) and Table 3 (IR-aware subset) layouts, reason counts, a
leakage audit, `stats.md` and the dataset card `README.md`."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionrs.dataset.card import write_card
from fusionrs.dataset.load import iter_tables
from fusionrs.dataset.schema import IR_CAPTION_ACCEPTED, IR_CAPTION_NOT_SELECTED, SPLITS

TRIPLET_STAT_COLUMNS = ["source", "split", "group_id", "caption_status", "ir_caption_status", "ir_caption_cost_usd",
                        "image_note", "is_eval_representative"]


def table2(rows) -> dict[str, dict[str, int]]:
    return table2_counts(Counter(rows))


def table2_counts(counts: Counter) -> dict[str, dict[str, int]]:
    """{source: {split: rows}} from row counts per (source, split)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
    for (src, sp), n in counts.items():
        out[src][sp] += n
    return {k: dict(v) for k, v in sorted(out.items())}


COUNT_KEYS = ("triplets", "rejects", "table2_composition", "table3_iraware_selected", "table3_iraware_accepted",
              "reject_reasons", "caption_status", "ir_caption_status", "image_notes", "eval_representatives",
              "cross_split_groups_in_output", "api_cost_usd")  # the manifest's `counts`, in this order


def write_reports(cfg, storage, layout, manifest: dict) -> dict:
    tri, rej = TripletCounts.of(cfg.output, storage).counts(), reject_counts(cfg.output, storage)
    stats = {"counts": {k: tri[k] if k in tri else rej[k] for k in COUNT_KEYS}}
    md = render_stats_md(stats["counts"], manifest)
    storage.write_text(layout.file("stats.md"), md)
    write_card(cfg.output, storage, stats["counts"], manifest, md)  # README.md and assets/grid.png
    return stats


class TripletCounts:
    """The reports' counts of the written triplets, summed one file at a time: the driver's
    memory stays flat in the number of rows (at 100K rows, holding every row as Python objects
    cost ~300 MiB)."""

    def __init__(self):
        self.rows = 0
        self.composition: Counter = Counter()  # (source, split)
        self.selected: Counter = Counter()  # IR-aware subset: (source, split)
        self.accepted: Counter = Counter()
        self.caption_status: Counter = Counter()
        self.ir_caption_status: Counter = Counter()
        self.image_notes: Counter = Counter()
        self.eval_reps: Counter = Counter()  # split
        self.costs: list[np.ndarray] = []  # per row, in file order: summed as before (see counts)
        self.groups: list[pa.Table] = []  # (group_id, split) of every row, for the leakage audit

    @classmethod
    def of(cls, output: str, storage) -> "TripletCounts":
        acc = cls()
        for t in iter_tables(output, TRIPLET_STAT_COLUMNS, "triplets", storage):
            acc.add(t)
        return acc

    def add(self, t: pa.Table) -> None:
        c = {k: t.column(k).to_pylist() for k in ("source", "split", "caption_status", "ir_caption_status",
                                                   "image_note", "is_eval_representative")}
        self.rows += t.num_rows
        pairs = list(zip(c["source"], c["split"]))
        self.composition.update(pairs)
        self.selected.update(p for p, s in zip(pairs, c["ir_caption_status"]) if s != IR_CAPTION_NOT_SELECTED)
        self.accepted.update(p for p, s in zip(pairs, c["ir_caption_status"]) if s == IR_CAPTION_ACCEPTED)
        self.caption_status.update(c["caption_status"])
        self.ir_caption_status.update(c["ir_caption_status"])
        self.image_notes.update(x for x in c["image_note"] if x)
        self.eval_reps.update(sp for sp, e in zip(c["split"], c["is_eval_representative"]) if e)
        self.costs.append(t.column("ir_caption_cost_usd").fill_null(0.0).to_numpy())
        self.groups.append(t.select(["group_id", "split"]))

    def counts(self) -> dict:
        return {
            "triplets": self.rows,
            "table2_composition": table2_counts(self.composition),
            "table3_iraware_selected": table2_counts(self.selected),
            "table3_iraware_accepted": table2_counts(self.accepted),
            "caption_status": dict(sorted(self.caption_status.items())),
            "ir_caption_status": dict(sorted(self.ir_caption_status.items())),
            "image_notes": dict(sorted(self.image_notes.items())),
            "eval_representatives": {s: self.eval_reps[s] for s in ("val", "test")},
            "cross_split_groups_in_output": self.cross_split_groups(),
            # Python's sum over the rows in file order, as the figure has always been computed
            # (a different order or summation could change its last digit).
            "api_cost_usd": round(float(sum(np.concatenate([np.zeros(0), *self.costs]).tolist())), 6),
        }

    def cross_split_groups(self) -> int:
        """Groups whose rows sit in more than one split (0 in a correct build): an Arrow group-by
        over the compact (group_id, split) columns, not a Python dict of every group."""
        if not self.groups:
            return 0
        t = pa.concat_tables(self.groups)
        # One thread: pyarrow's threaded count_distinct over many chunks failed here ("thread
        # index 11 is out of range"); the table is two small columns.
        per_group = t.group_by("group_id", use_threads=False).aggregate([("split", "count_distinct", pc.CountOptions(mode="all"))])
        return int(pc.sum(pc.greater(per_group.column("split_count_distinct"), 1)).as_py() or 0)


def reject_counts(output: str, storage) -> dict:
    rows, reasons = 0, Counter()
    for t in iter_tables(output, ["stage", "reason"], "rejects", storage):
        rows += t.num_rows
        reasons.update(f"{s}:{x}" for s, x in zip(t.column("stage").to_pylist(), t.column("reason").to_pylist()))
    return {"rejects": rows, "reject_reasons": dict(sorted(reasons.items()))}


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
