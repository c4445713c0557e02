"""One self-contained HTML page about a build and what was trained and evaluated on it (docs/report.md).

    fusionrs report OUT [--train RUN ...] [--eval DIR ...]        (writes OUT/report.html)
    python -c "from fusionrs.report_html import write_report as w; print(w('out/demo/build',
               ['out/demo/train/clip-demo'], ['out/demo/eval']))"

Sections: the build; the paper's Table 2 / Table 3 layouts and split sizes (computed from the
written output with build/report.py's functions); RGB | IR contact sheets per source; examples
per reject reason and per IR-aware caption filter code; caption length histograms; training
curves from each run's metrics.jsonl; retrieval tables, bar charts and (when the eval folder has
retrieval_examples.json) queries with their top 5; VLM predictions beside their references; the
cost ledger. A section without data says so in one line.

The page opens offline: every image is an inline data: URI, the CSS is inline, and a Content
Security Policy forbids loading anything else. Its size is bounded by the parameters (thumbnail
side, examples per section), not by the build: the images of a 600K build are read only from the
few files that hold the rows shown (two passes over the triplets, the first without images).

It sits at the top of the package, beside demo.py, because it reads every floor (dataset, build,
train, eval); eval/ may not import build/ (docs/architecture.md).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
from PIL import Image

from fusionrs.build.ledger import format_forecast_vs_spent, format_ledgers, read_ledgers
from fusionrs.build.report import md_table2, md_table3, table2
from fusionrs.config.train import VLM_TASKS
from fusionrs.core.storage import Storage, join
from fusionrs.dataset.card import split_rows, triplet_files
from fusionrs.dataset.layout import REPORT_FILE, Layout
from fusionrs.dataset.load import read_table
from fusionrs.dataset.schema import (
    IR_CAPTION_ACCEPTED,
    IR_CAPTION_FILTERED,
    IR_CAPTION_NOT_SELECTED,
    REJECT_COLUMNS,
    SPLITS,
)
from fusionrs.eval.retrieval import DIRECTIONS, KS, NAMES, markdown_table
from fusionrs.eval.vlm_metrics import GENERATION_OK, table5

RETRIEVAL_EXAMPLES_FILE = "retrieval_examples.json"  # optional, written by clip_eval (docs/report.md)
# (id, title) of every section, in page order: each is always present, with data or a one-line note.
SECTIONS = [
    ("overview", "Build"),
    ("composition", "Composition and splits"),
    ("contact-sheets", "Contact sheets"),
    ("rejects", "Rejects by reason"),
    ("caption-filters", "IR-aware captions by filter code"),
    ("caption-lengths", "Caption lengths"),
    ("training", "Training curves"),
    ("retrieval", "Retrieval"),
    ("retrieval-examples", "Retrieval examples"),
    ("vlm", "VLM predictions"),
    ("cost", "Cost ledger"),
]
MAX_TEXT = 400  # characters of one caption, detail or prediction shown (the page stays small)
CHART_DPI = 80
# Columns of the first pass: everything the counts and the choices need, no image bytes.
SCAN_COLUMNS = ["sample_id", "source", "split", "caption", "ir_aware_caption", "ir_caption_status",
                "is_eval_representative"]
SHOW_COLUMNS = ["sample_id", "source", "split", "caption", "ir_aware_caption", "ir_caption_status", "rgb_jpeg", "ir_jpeg"]
REJECT_SHOWN = [c.name for c in REJECT_COLUMNS]


def write_report(output: str, train_runs: list[str] = (), eval_dirs: list[str] = (), out: str | None = None,
                 storage: Storage | None = None, *, examples: int = 4, per_split: int = 2, thumb: int = 128,
                 selfcheck: bool = False) -> str:
    """Write the report and return its URI (default OUTPUT/report.html).

    train_runs: training run folders (`<storage_path>/<name>`, or their `metrics/` folder);
    eval_dirs: evaluation folders (retrieval.json, retrieval_examples.json, vlm_results.json,
    vlm_predictions.jsonl, whichever exist). examples: rows shown per reject reason, filter code,
    VLM task and retrieval direction; per_split: contact-sheet rows per source and split;
    thumb: thumbnail side in pixels. selfcheck: add a script that marks on <body> how many images
    failed to load and every error the page raised (what the browser test reads).
    """
    storage = storage or Storage.from_env()
    layout = Layout(output)
    manifest = _json(storage, layout.file("manifest.json"))
    files = triplet_files(output, storage)
    if not files and manifest is None and not storage.list_files(layout.rejects(), "*.parquet"):
        raise FileNotFoundError(f"no triplets, rejects or manifest.json under {output}: is it a build's output?")
    evals = [_read_eval(storage, d) for d in eval_dirs]
    runs = [_read_run(storage, r) for r in train_runs]
    wanted_elsewhere = set().union(*(_eval_shown_ids(e, examples) for e in evals))
    scan = _scan(storage, files, examples, per_split, wanted_elsewhere)
    shown = _fetch_shown(storage, scan, thumb)
    rejects = read_table(output, REJECT_SHOWN, "rejects", storage)
    body = [
        _overview(output, manifest, scan, rejects),
        _composition(scan),
        _contact_sheets(scan, shown),
        _rejects(rejects, examples),
        _caption_filters(scan, shown),
        _caption_lengths(scan),
        _training(runs),
        _retrieval(evals),
        _retrieval_examples(evals, shown, examples),
        _vlm(evals, shown, examples),
        _cost(storage, output, manifest),
    ]
    page = _page(f"FusionRS report: {output}", body, selfcheck, thumb)
    uri = out or layout.file(REPORT_FILE)
    storage.write_text(uri, page)
    return uri


# ---------------------------------------------------------------------------------------
# Reading.


def _json(storage: Storage, uri: str):
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def _scan(storage: Storage, files: list[str], examples: int, per_split: int, wanted: set[str]) -> dict:
    """First pass over the triplets, without image bytes: counts, caption lengths, and the rows
    to show (smallest sample_ids: deterministic, and independent of part names and order), each
    with the file that holds it."""
    pairs, selected, accepted, reps = [], [], [], Counter()
    status_counts: Counter = Counter()
    lengths = {"original": Counter(), "IR-aware accepted": Counter(), "IR-aware filtered": Counter()}
    picks: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)  # (source, split) → [(sid, file)]
    by_code: dict[str, list[tuple[str, str]]] = defaultdict(list)
    code_counts: Counter = Counter()
    where: dict[str, str] = {}
    for uri in files:
        t = storage.read_parquet(uri, columns=SCAN_COLUMNS).to_pydict()
        local: dict[tuple[str, str], list] = defaultdict(list)
        local_codes: dict[str, list] = defaultdict(list)
        for sid, src, sp, cap, ira, st, rep in zip(*(t[c] for c in SCAN_COLUMNS)):
            pairs.append((src, sp))
            status_counts[st] += 1
            if rep:
                reps[sp] += 1
            if st != IR_CAPTION_NOT_SELECTED:  # the selection of build/report.write_reports
                selected.append((src, sp))
            if st == IR_CAPTION_ACCEPTED:
                accepted.append((src, sp))
            lengths["original"][_words(cap)] += 1
            if st == IR_CAPTION_ACCEPTED and ira:
                lengths["IR-aware accepted"][_words(ira)] += 1
            elif st and st.startswith(IR_CAPTION_FILTERED):
                if ira:
                    lengths["IR-aware filtered"][_words(ira)] += 1
                for code in st[len(IR_CAPTION_FILTERED):].split("+"):
                    code_counts[code] += 1
                    local_codes[code].append((sid, uri))
            local[(src, sp)].append((sid, uri))
            if sid in wanted:
                where[sid] = uri
        for k, v in local.items():  # keep only the smallest ids seen so far: memory stays bounded
            picks[k] = sorted(picks[k] + v)[:per_split]
        for k, v in local_codes.items():
            by_code[k] = sorted(by_code[k] + v)[:examples]
    for chosen in (*picks.values(), *by_code.values()):
        where.update(dict(chosen))
    return {"files": len(files), "rows": len(pairs), "composition": table2(pairs), "selected": table2(selected),
            "accepted": table2(accepted), "eval_representatives": dict(reps), "ir_caption_status": status_counts,
            "lengths": lengths, "picks": {k: [s for s, _ in v] for k, v in sorted(picks.items())},
            "by_code": {k: [s for s, _ in v] for k, v in sorted(by_code.items())}, "code_counts": code_counts,
            "where": where}


def _words(text: str | None) -> int:
    return len((text or "").split())


def _fetch_shown(storage: Storage, scan: dict, thumb: int) -> dict[str, dict]:
    """Second pass: the shown rows' captions and thumbnails, read only from the files that hold them."""
    by_file: dict[str, set[str]] = defaultdict(set)
    for sid, uri in scan["where"].items():
        by_file[uri].add(sid)
    shown = {}
    for uri, ids in sorted(by_file.items()):
        t = storage.read_parquet(uri, columns=SHOW_COLUMNS)
        t = t.filter(pc.is_in(t["sample_id"], value_set=pa.array(sorted(ids), pa.string())))
        for r in t.to_pylist():
            r["rgb"], r["ir"] = _thumb(r.pop("rgb_jpeg"), thumb), _thumb(r.pop("ir_jpeg"), thumb)
            shown[r["sample_id"]] = r
    return shown


def _thumb(jpeg: bytes | None, side: int) -> str | None:
    """A JPEG thumbnail (longest side ≤ `side`) as a data: URI; None when the bytes do not decode."""
    if not jpeg:
        return None
    try:
        with Image.open(io.BytesIO(jpeg)) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - an undecodable image is shown as such, not a failed report
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _read_run(storage: Storage, run: str) -> dict:
    """A training run's metrics.jsonl records (fusionrs/train/metrics.py), through Storage so an
    s3:// run reads like a local one (train.metrics.read_metrics reads local folders only)."""
    for uri in (join(run, "metrics", "metrics.jsonl"), join(run, "metrics.jsonl")):
        if storage.exists(uri):
            return {"run": run, "records": _jsonl(storage.read_bytes(uri).decode())}
    return {"run": run, "records": []}


def _jsonl(text: str) -> list[dict]:
    """JSON lines; a last line cut short (a run still writing) is left out."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    return [json.loads(line) for line in lines]


def _read_eval(storage: Storage, d: str) -> dict:
    e = {"dir": d, "retrieval": _json(storage, join(d, "retrieval.json")),
         "examples": _json(storage, join(d, RETRIEVAL_EXAMPLES_FILE)),
         "vlm": _json(storage, join(d, "vlm_results.json")), "predictions": []}
    uri = join(d, "vlm_predictions.jsonl")
    if storage.exists(uri):
        e["predictions"] = _jsonl(storage.read_bytes(uri).decode())
    return e


def _eval_shown_ids(e: dict, examples: int) -> set[str]:
    """The rows of the build whose images and captions an evaluation folder's sections show."""
    ids = set()
    for model in (e["examples"] or {}).values():
        for ex in _first_examples(model.get("examples", []), examples):
            ids |= {ex["query"], *(r["sample_id"] for r in ex["top"])}
    for rows in _vlm_rows(e["predictions"], examples).values():
        ids |= {sid for sid, _ in rows}
    return ids


# ---------------------------------------------------------------------------------------
# Sections.


def _overview(output: str, manifest: dict | None, scan: dict, rejects: pa.Table | None) -> str:
    items = [("output", output), ("triplets", f"{scan['rows']:,} rows in {scan['files']:,} files"),
             ("rejects", f"{rejects.num_rows if rejects is not None else 0:,} rows")]
    if manifest:
        created = manifest.get("created_unix")
        items += [("status", manifest.get("status", "?")), ("run", manifest.get("run_id", "?")),
                  ("fusionrs", manifest.get("fusionrs_version", "?")),
                  ("translator", _backend(manifest.get("translator"))), ("captioner", _backend(manifest.get("captioner"))),
                  ("config fingerprint", manifest.get("config_fingerprint", "?"))]
        if created:
            items.append(("created", datetime.fromtimestamp(int(created), tz=timezone.utc).isoformat()))
    else:
        items.append(("manifest", "no manifest.json (an unfinished or partial output)"))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return _section("overview", f"<table class='kv'>{rows}</table>")


def _backend(d: dict | None) -> str:
    return " ".join(str(d[k]) for k in ("backend", "version", "model") if d and d.get(k)) or "?"


def _composition(scan: dict) -> str:
    if not scan["rows"]:
        return _section("composition", _empty("No triplets in this output."))
    comp, acc = scan["composition"], scan["accepted"]
    sizes, accepted = split_rows(comp), split_rows(acc)
    split_table = "<table class='data' id='split-sizes'><tr><th>split</th><th>triplets</th><th>IR-aware accepted</th>" \
                  "<th>evaluation representatives</th></tr>" + "".join(
                      f"<tr><td>{s}</td><td>{sizes[s]:,}</td><td>{accepted[s]:,}</td>"
                      f"<td>{scan['eval_representatives'].get(s, 0):,}</td></tr>" for s in SPLITS) + "</table>"
    parts = ["<h3>Composition (paper Table 2 layout)</h3>", _md_html(md_table2(comp), "table2"),
             "<h3>IR-aware captions accepted after filtering (paper Table 3 layout)</h3>",
             _md_html(md_table3(acc), "table3-accepted") if acc else _empty("No IR-aware caption was accepted."),
             "<h3>Selected for IR-aware captioning</h3>",
             _md_html(md_table3(scan["selected"]), "table3-selected") if scan["selected"]
             else _empty("No row was selected for IR-aware captioning."),
             "<h3>Split sizes</h3>", split_table]
    return _section("composition", "".join(parts))


def _contact_sheets(scan: dict, shown: dict) -> str:
    if not scan["picks"]:
        return _section("contact-sheets", _empty("No triplets to show."))
    by_source: dict[str, list[tuple]] = defaultdict(list)
    for (src, sp), ids in scan["picks"].items():
        by_source[src] += [(SPLITS.index(sp) if sp in SPLITS else len(SPLITS), sp, sid) for sid in ids]
    out = ["<p>Per source and split, the rows with the smallest sample_ids.</p>"]
    for src in sorted(by_source):
        rows = []
        for _, sp, sid in sorted(by_source[src]):
            r = shown[sid]
            rows.append(f"<tr data-sample-id='{_e(sid)}'><td>{_e(sp)}<br><code>{_e(sid)}</code></td>"
                        f"<td>{_img(r['rgb'], 'RGB ' + sid)}</td><td>{_img(r['ir'], 'IR ' + sid)}</td>"
                        f"<td>{_text(r['caption'])}</td><td>{_text(r['ir_aware_caption'])}"
                        f"<br><span class='status'>{_e(r['ir_caption_status'])}</span></td></tr>")
        out.append(f"<h3>{_e(src)}</h3><table class='data sheet'><tr><th>split / sample_id</th><th>RGB</th><th>IR</th>"
                   f"<th>original caption</th><th>IR-aware caption</th></tr>{''.join(rows)}</table>")
    return _section("contact-sheets", "".join(out))


def _rejects(rejects: pa.Table | None, examples: int) -> str:
    if rejects is None or not rejects.num_rows:
        return _section("rejects", _empty("No rejects in this output."))
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rejects.to_pylist():
        groups[f"{r['stage']}:{r['reason']}"].append(r)
    counts = "".join(f"<tr><td>{_e(k)}</td><td>{len(v):,}</td></tr>" for k, v in sorted(groups.items()))
    out = [f"<table class='data' id='reject-counts'><tr><th>stage:reason</th><th>rows</th></tr>{counts}</table>",
           "<p>A reject has no image in the output: each example shows what was recorded instead.</p>"]
    for key, rows in sorted(groups.items()):
        body = "".join(
            f"<tr data-sample-id='{_e(r['sample_id'])}'><td><code>{_e(r['sample_id'])}</code><br>{_e(r['source'])}</td>"
            f"<td><code>{_e(r['source_locator']) or '(refused locator)'}</code><br>{_e(r['source_record_id'])}</td>"
            f"<td>{_text(r['detail'])}</td><td>{_e(r['caption_status'])}</td>"
            f"<td>{_list(r['raw_captions'])}</td></tr>"
            for r in sorted(rows, key=lambda r: r["sample_id"] or "")[:examples])
        out.append(f"<h3 data-reason='{_e(key)}'>{_e(key)} ({len(rows):,})</h3><table class='data'><tr><th>sample_id / source</th>"
                   f"<th>locator / record id</th><th>detail</th><th>caption status</th><th>raw captions</th></tr>"
                   f"{body}</table>")
    return _section("rejects", "".join(out))


def _caption_filters(scan: dict, shown: dict) -> str:
    status = "".join(f"<tr><td>{_e(k)}</td><td>{v:,}</td></tr>" for k, v in sorted(scan["ir_caption_status"].items()))
    out = [f"<table class='data' id='ir-caption-status'><tr><th>ir_caption_status</th><th>rows</th></tr>{status}</table>"]
    if not scan["by_code"]:
        out.append(_empty("No IR-aware caption was filtered out."))
    for code, ids in scan["by_code"].items():
        body = "".join(
            f"<tr data-sample-id='{_e(sid)}'><td><code>{_e(sid)}</code><br>{_e(shown[sid]['source'])}</td>"
            f"<td>{_img(shown[sid]['ir'], 'IR ' + sid)}</td><td>{_text(shown[sid]['ir_aware_caption'])}</td>"
            f"<td>{_text(shown[sid]['caption'])}</td><td class='status'>{_e(shown[sid]['ir_caption_status'])}</td></tr>"
            for sid in ids)
        out.append(f"<h3 data-code='{_e(code)}'>{_e(code)} ({scan['code_counts'][code]:,})</h3><table class='data'>"
                   f"<tr><th>sample_id</th><th>IR</th><th>IR-aware caption</th><th>original caption</th><th>status</th></tr>"
                   f"{body}</table>")
    return _section("caption-filters", "".join(out))


def _caption_lengths(scan: dict) -> str:
    series = {k: c for k, c in scan["lengths"].items() if c}
    if not series:
        return _section("caption-lengths", _empty("No captions."))
    top = max(max(c) for c in series.values())
    edges = list(range(0, top + 2))
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax = fig.add_subplot()
    for name, c in series.items():
        n = sum(c.values())
        ax.hist(list(c), bins=edges, weights=[v / n for v in c.values()], histtype="step", linewidth=1.5,
                label=f"{name} ({n:,})")
    ax.set_xlabel("words per caption")
    ax.set_ylabel("share of captions")
    ax.legend()
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{sum(c.values()):,}</td><td>{_mean_words(c):.2f}</td><td>{min(c)}</td>"
                   f"<td>{max(c)}</td></tr>" for k, c in series.items())
    table = ("<table class='data' id='caption-length-stats'><tr><th>captions</th><th>count</th><th>mean words</th>"
             f"<th>min</th><th>max</th></tr>{rows}</table>")
    return _section("caption-lengths", _chart(fig, "caption length histograms") + table)


def _mean_words(c: Counter) -> float:
    return sum(k * v for k, v in c.items()) / sum(c.values())


def _training(runs: list[dict]) -> str:
    if not runs:
        return _section("training", _empty("No training runs given (fusionrs report OUT --train RUN)."))
    out = []
    for run in runs:
        recs = run["records"]
        out.append(f"<h3>{_e(run['run'])}</h3>")
        if not recs:
            out.append(_empty("No metrics.jsonl in this run."))
            continue
        series: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for r in recs:
            for k, v in r.items():
                if k not in ("step", "time") and isinstance(v, (int, float)) and math.isfinite(v):
                    series[k][0].append(r["step"])
                    series[k][1].append(v)
        throughput = sorted(k for k in series if k.startswith("train/") and k.endswith("_per_s"))
        panels = [(k, [k]) for k in ("train/loss", "train/lr", "train/grad_norm") if k in series]
        panels += [(k, [k]) for k in throughput]
        val = sorted(k for k in series if k.startswith("val/"))
        if val:
            panels.append(("validation", val))
        if panels:
            out.append(_chart(_panels(panels, series), f"training curves of {run['run']}"))
        rows = "".join(f"<tr><td>{_e(k)}</td><td>{len(v[1]):,}</td><td>{v[0][-1]}</td><td>{_num(v[1][-1])}</td>"
                       f"<td>{_num(min(v[1]))}</td><td>{_num(max(v[1]))}</td></tr>" for k, v in sorted(series.items()))
        out.append(f"<table class='data metrics'><tr><th>metric</th><th>records</th><th>last step</th><th>last</th>"
                   f"<th>min</th><th>max</th></tr>{rows}</table>")
    return _section("training", "".join(out))


def _panels(panels: list[tuple[str, list[str]]], series: dict) -> Figure:
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * nrows), layout="constrained")
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for k in keys:
            ax.plot(*series[k], marker="." if len(series[k][0]) < 30 else None, label=k.removeprefix("val/"))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    return fig


def _retrieval(evals: list[dict]) -> str:
    with_results = [e for e in evals if e["retrieval"]]
    if not with_results:
        return _section("retrieval", _empty("No retrieval.json in the evaluation folders given (--eval DIR)."))
    out = []
    for e in with_results:
        res = {m: _int_ks(r) for m, r in e["retrieval"].items()}
        out.append(f"<h3>{_e(e['dir'])}</h3>")
        out.append(_md_html(markdown_table({m: r["overall"] for m, r in res.items()}, "Retrieval (R@1/5/10, %)"),
                            "retrieval-overall"))
        out.append(_chart(_retrieval_bars(res), "retrieval bar charts"))
        for m, r in res.items():
            if r.get("per_source"):
                out.append(_md_html(markdown_table(r["per_source"], f"{m}: per source")))
            if "zero_shot_ir" in r:
                z = r["zero_shot_ir"]
                out.append(f"<p>{_e(m)}: zero-shot IR scene classification over {z['classes']} classes, {z['images']} "
                           f"images: top-1 {z['top1']:.2f}%, top-5 {z['top5']:.2f}%</p>")
    return _section("retrieval", "".join(out))


def _int_ks(result: dict) -> dict:
    """A model's retrieval.json entry with R@K keys as ints again (JSON made them strings; the
    tables and charts index them by retrieval.KS)."""
    def fix(six: dict) -> dict:
        return {d: ({int(k): v for k, v in x.items()} if isinstance(x, dict) else x) for d, x in six.items()}

    return {**result, "overall": fix(result["overall"]),
            "per_source": {s: fix(v) for s, v in (result.get("per_source") or {}).items()}}


def _retrieval_bars(res: dict) -> Figure:
    """One panel per K: every direction, one bar per model."""
    dirs = [f"{NAMES[a]}->{NAMES[b]}" for a, b in DIRECTIONS]
    models = list(res)
    fig = Figure(figsize=(11, 3), layout="constrained")
    width = 0.8 / max(1, len(models))
    for i, k in enumerate(KS):
        ax = fig.add_subplot(1, len(KS), i + 1)
        for j, m in enumerate(models):
            ax.bar([x + j * width for x in range(len(dirs))], [res[m]["overall"][d][k] for d in dirs], width, label=m)
        ax.set_xticks([x + width * (len(models) - 1) / 2 for x in range(len(dirs))], [d.replace("->", "→") for d in dirs],
                      rotation=45, fontsize=7)
        ax.set_title(f"R@{k} (%)", fontsize=9)
        ax.set_ylim(0, 100)
        ax.tick_params(labelsize=7)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=max(1, len(models)), fontsize=8)
    return fig


def _first_examples(examples: list[dict], n: int) -> list[dict]:
    """The first n examples of each direction, in the file's order."""
    seen: Counter = Counter()
    out = []
    for ex in examples:
        if seen[ex["direction"]] < n:
            seen[ex["direction"]] += 1
            out.append(ex)
    return out


def _retrieval_examples(evals: list[dict], shown: dict, examples: int) -> str:
    with_examples = [e for e in evals if e["examples"]]
    if not with_examples:
        return _section("retrieval-examples", _empty(f"No {RETRIEVAL_EXAMPLES_FILE} in the evaluation folders given."))
    out = ["<p>Each query with its top results, best first; <span class='hit legend'>✓</span> marks a hit (a positive: "
           "the same sample for RGB↔IR, the same normalized caption for text).</p>"]
    for e in with_examples:
        for model, m in e["examples"].items():
            out.append(f"<h3>{_e(model)} <small>({_e(e['dir'])}, {_e(m.get('split', '?'))})</small></h3>")
            rows = []
            for ex in _first_examples(m.get("examples", []), examples):
                q_mod, g_mod = ex["direction"].split("->")
                cells = [f"<td class='query'>{_item(shown, ex['query'], q_mod)}</td>"]
                for r in ex["top"]:
                    mark = "<span class='hit'>✓ hit</span>" if r["hit"] else "<span class='miss'>miss</span>"
                    cells.append(f"<td class='{'hit' if r['hit'] else 'miss'}'>{_item(shown, r['sample_id'], g_mod)}"
                                 f"<br>{mark} {r['score']:.3f}</td>")
                rows.append(f"<tr><th>{_e(ex['direction'].replace('->', '→'))}</th>{''.join(cells)}</tr>")
            out.append(f"<table class='data examples'><tr><th>direction</th><th>query</th><th colspan='{m.get('k', 5)}'>"
                       f"top {m.get('k', 5)}</th></tr>{''.join(rows)}</table>")
    return _section("retrieval-examples", "".join(out))


def _item(shown: dict, sid: str, modality: str) -> str:
    r = shown.get(sid)
    if r is None:
        return f"<code>{_e(sid)}</code><br><span class='status'>(not in this build)</span>"
    if modality == NAMES["text"]:
        return f"{_text(r['caption'])}<br><code class='small'>{_e(sid)}</code>"
    key = "ir" if modality == NAMES["ir"] else "rgb"
    return f"{_img(r[key], f'{modality} {sid}')}<br><code class='small'>{_e(sid)}</code>"


def _vlm_rows(predictions: list[dict], examples: int) -> dict[str, list[tuple[str, dict]]]:
    """task → [(sample_id, {model: prediction row})]: the `examples` smallest sample_ids per task."""
    by_task: dict[str, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for p in predictions:
        by_task[p["task"]][p["sample_id"]][p["model"]] = p
    order = {t: i for i, t in enumerate(VLM_TASKS)}
    return {t: sorted(by_task[t].items())[:examples] for t in sorted(by_task, key=lambda t: (order.get(t, 99), t))}


def _vlm(evals: list[dict], shown: dict, examples: int) -> str:
    with_vlm = [e for e in evals if e["vlm"] or e["predictions"]]
    if not with_vlm:
        return _section("vlm", _empty("No vlm_results.json or vlm_predictions.jsonl in the evaluation folders given."))
    out = []
    for e in with_vlm:
        out.append(f"<h3>{_e(e['dir'])}</h3>")
        if e["vlm"]:
            out.append(_md_html(table5({m: r["metrics"] for m, r in e["vlm"].items()},
                                       "Generative evaluation (%, mean [95% bootstrap CI over images])"), "table5"))
            out.append("<ul>" + "".join(f"<li>{_e(m)}: {r.get('images', '?')} images, {r.get('items', '?')} items, "
                                        f"{r.get('failed', '?')} failed generations</li>" for m, r in e["vlm"].items())
                       + "</ul>")
        models = list(dict.fromkeys(p["model"] for p in e["predictions"]))  # in the file's order
        for task, rows in _vlm_rows(e["predictions"], examples).items():
            body = []
            for sid, per_model in rows:
                first = next(iter(per_model.values()))
                refs = first["references"]
                refs = json.loads(refs) if isinstance(refs, str) else refs
                ir = shown.get(sid, {}).get("ir")
                preds = "".join(f"<td>{_prediction(per_model.get(m))}</td>" for m in models)
                body.append(f"<tr data-sample-id='{_e(sid)}'><td><code>{_e(sid)}</code><br>{_e(first.get('source', ''))}"
                            f"</td><td>{_img(ir, 'IR ' + sid) if ir else '(not in this build)'}</td>"
                            f"<td>{_list(refs)}</td>{preds}</tr>")
            heads = "".join(f"<th>{_e(m)}</th>" for m in models)
            out.append(f"<h4 data-task='{_e(task)}'>{_e(task)}</h4><table class='data vlm'><tr><th>sample_id</th><th>IR</th>"
                       f"<th>references</th>{heads}</tr>{''.join(body)}</table>")
        if not e["predictions"]:
            out.append(_empty("No vlm_predictions.jsonl in this folder."))
    return _section("vlm", "".join(out))


def _prediction(p: dict | None) -> str:
    if p is None:
        return "<span class='status'>(no prediction)</span>"
    text = _text(p.get("prediction"))
    return text if p.get("status") == GENERATION_OK else f"{text}<br><span class='status'>{_e(p.get('status'))}</span>"


def _cost(storage: Storage, output: str, manifest: dict | None) -> str:
    ledgers = read_ledgers(storage, output)
    runs = [r for r in ledgers if isinstance(r, dict) and "totals" in r and "stages" in r]
    if not runs:
        return _section("cost", _empty("No run ledger under ledger/."))
    text = format_ledgers(runs)
    forecast = format_forecast_vs_spent((manifest or {}).get("forecast"), runs)
    skipped = f"<p class='status'>{len(ledgers) - len(runs)} file(s) under ledger/ are not run ledgers (skipped).</p>" \
        if len(ledgers) > len(runs) else ""
    return _section("cost", f"<pre>{_e(text)}</pre>" + (f"<pre>{_e(forecast)}</pre>" if forecast else "") + skipped)


# ---------------------------------------------------------------------------------------
# HTML.

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.5em}h2{border-bottom:2px solid #ccc;margin-top:2em}h3{margin-bottom:.3em}
table.data{border-collapse:collapse;margin:.5em 0}table.data td,table.data th{border:1px solid #ddd;padding:3px 6px;
vertical-align:top;text-align:left}table.data th{background:#f3f3f3}table.kv th{text-align:left;padding-right:1em}
td{max-width:28em}code{font-size:12px}.small{font-size:10px}.empty{color:#777;font-style:italic}.status{color:#a50}
span.hit{color:#070;font-weight:bold}td.hit{background:#efe}span.miss{color:#999}img.chart{max-width:100%}
img.thumb{width:THUMBpx;height:auto}ol{margin:0;padding-left:1.4em}
nav a{margin-right:1em}pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px}
"""

# Marks on <body> what a browser saw: images that did not load, errors (script errors, resources
# refused by the policy, console errors). The browser test reads them with --dump-dom.
SELFCHECK_JS = """
(function(){var errs=[];function add(m){errs.push(String(m).slice(0,300));}
window.addEventListener('error',function(e){add(e.message||('resource: '+(e.target&&(e.target.src||e.target.tagName))));},true);
document.addEventListener('securitypolicyviolation',function(e){add('csp: '+e.violatedDirective+' '+e.blockedURI);});
var ce=console.error;console.error=function(){add(Array.prototype.join.call(arguments,' '));return ce.apply(console,arguments);};
window.addEventListener('load',function(){var imgs=document.images,broken=0;
for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0)broken++;}
var b=document.body.dataset;b.images=imgs.length;b.brokenImages=broken;b.errors=JSON.stringify(errs);b.selfcheck='done';});})();
"""


def _page(title: str, sections: list[str], selfcheck: bool, thumb: int) -> str:
    script_src = "'unsafe-inline'" if selfcheck else "'none'"
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_src}"
    nav = "".join(f"<a href='#{sid}'>{_e(t)}</a>" for sid, t in SECTIONS)
    script = f"<script>{SELFCHECK_JS}</script>" if selfcheck else ""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
            f"<meta name='viewport' content='width=device-width'><title>{_e(title)}</title><style>{CSS.replace('THUMB', str(thumb))}</style>{script}"
            f"</head><body><h1>{_e(title)}</h1><nav>{nav}</nav>{''.join(sections)}</body></html>\n")


def _section(sid: str, body: str) -> str:
    return f"<section id='{sid}'><h2>{_e(dict(SECTIONS)[sid])}</h2>{body}</section>"


def _empty(line: str) -> str:
    return f"<p class='empty'>{_e(line)}</p>"


def _e(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _text(s: str | None) -> str:
    if not s:
        return "<span class='empty'>—</span>"
    return _e(s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + "…")


def _list(items) -> str:
    items = list(items or [])
    return "<ol>" + "".join(f"<li>{_text(x)}</li>" for x in items) + "</ol>" if items else "<span class='empty'>—</span>"


def _num(v: float) -> str:
    return f"{v:.4g}"


def _img(uri: str | None, alt: str) -> str:
    if not uri:
        return "<span class='status'>(image does not decode)</span>"
    return f"<img class='thumb' alt='{_e(alt)}' src='{uri}'>"


def _chart(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI, metadata={"Software": None})  # no version stamp: same bytes
    return f"<img class='chart' alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _md_html(md: str, table_id: str = "") -> str:
    """The Markdown tables of build/report.py, eval/retrieval.py and eval/vlm_metrics.py as HTML:
    the paper's layouts stay defined once, in those modules."""
    out, rows = [], []

    def flush():
        if rows:
            head, body = rows[0], [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            id_attr = f" id='{table_id}'" if table_id and not any("<table" in o for o in out) else ""
            out.append(f"<table class='data'{id_attr}><tr>" + "".join(f"<th>{_e(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            rows.clear()

    for line in md.splitlines():
        line = line.strip()
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("#"):
            out.append(f"<h4>{_e(line.lstrip('#').strip())}</h4>")
        elif line:
            out.append(f"<p>{_e(line)}</p>")
    flush()
    return "".join(out)
