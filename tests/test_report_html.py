"""The HTML report (fusionrs/report_html.py) on a small real build output written without Ray
(tests/release_fixture.py), plus a training run's metrics.jsonl, an evaluation folder in the
formats clip_eval and vlm_eval write, and a cost ledger written by the build's RunLedger.

    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_report_html.py

The structural tests parse the page with html.parser and decode every image with PIL; every
expected value is computed here from the rows the test wrote. The browser test opens the page in
headless Chromium (/usr/bin/chromium; `apt-get install -y chromium`), reads what the page's
self-check marked on <body> (--dump-dom) and the console lines on stderr, and screenshots it; it
is skipped, saying why, where there is no Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from fusionrs.build.ledger import RunLedger
from fusionrs.core.storage import Storage
from fusionrs.dataset.schema import REJECT_SCHEMA, SPLITS, STAGE_INGEST, STAGE_TRANSLATE, TRIPLET_SCHEMA
from fusionrs.eval.retrieval import NAMES, six_directions
from fusionrs.eval.vlm_metrics import aggregate, score_row
from fusionrs.report_html import SECTIONS, write_report
from tests.release_fixture import write_build

# Debian's package (`apt-get install -y chromium`); elsewhere whatever `chromium` is on PATH.
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
EXAMPLES, PER_SPLIT, THUMB = 2, 2, 64
INJECTION = "<img src=x onerror=alert(1)><script>alert(2)</script>"
BASE, LORA = "tiny VLM (base)", "+ LoRA B-iraware"


# ---------------------------------------------------------------------------------------
# The inputs: a build, a training run, an evaluation folder, a ledger.


def _jpeg(color: tuple[int, int, int]) -> bytes:
    """Larger than a thumbnail and not square (the fixture's pictures are 24 × 24)."""
    buf = io.BytesIO()
    Image.new("RGB", (200, 120), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def add_filtered_rows(out: Path, rows: list[dict]) -> list[dict]:
    """A second RSICD part with IR-aware captions the filter refused (the fixture has none), one
    with markup in its caption, written with the triplet schema."""
    extra = []
    for i, (status, ira) in enumerate([("filtered:rgb_color", "a red roof and green trees, warm tones"),
                                       ("filtered:too_short+weak_ir_cues", "bright"),
                                       ("filtered:rgb_color", "blue water beside a grey bright road"),
                                       ("filtered:rgb_color", "yellow field with a bright dark outline strip"),
                                       ("failed:not_captioned", None)]):
        r = dict(rows[0])
        sid = f"RSICD-{hashlib.sha256(f'extra{i}'.encode()).hexdigest()[:16]}"
        r.update(sample_id=sid, source_record_id=f"extra_{i}.jpg", source_locator=f"extra_{i}.jpg", split="train",
                 group_id=f"group-{sid[-20:]:0>20}", group_size=1, is_eval_representative=False,
                 caption=f"extra scene {i} with a long runway beside many hangars {INJECTION if i == 1 else ''}".strip(),
                 rgb_jpeg=_jpeg((200, 40 + 30 * i, 40)), ir_jpeg=_jpeg((30 + 40 * i,) * 3),
                 ir_aware_caption=ira, ir_caption_status=status)
        r["captions"] = [r["caption"]]
        extra.append(r)
    Storage().write_parquet(str(out / "triplets" / "RSICD-00001-train.parquet"),
                            pa.Table.from_pylist(extra, schema=TRIPLET_SCHEMA))
    return extra


def add_rejects(out: Path) -> list[dict]:
    rej = [{"sample_id": "SkyScript-0000000000000001", "source": "SkyScript", "source_record_id": "#entry-7",
            "source_locator": "", "stage": STAGE_INGEST, "reason": "unsafe_locator", "detail": "'../../etc/passwd'",
            "caption_status": "original", "raw_captions": ["a path that leaves the root"]}]
    rej += [{"sample_id": f"NWPU-00000000000000{i:02d}", "source": "NWPU", "source_record_id": f"airport/a_{i}.jpg",
             "source_locator": f"NWPU_images/airport/a_{i}.jpg", "stage": STAGE_TRANSLATE, "reason": "ir_blank",
             "detail": f"IR image is constant ({i})", "caption_status": "original", "raw_captions": [f"blank {i}", f"second sentence of reject {i}"]}
            for i in range(3)]
    Storage().write_parquet(str(out / "rejects" / "extra-00001.parquet"), pa.Table.from_pylist(rej, schema=REJECT_SCHEMA))
    return rej


def write_metrics(run: Path) -> list[dict]:
    """metrics.jsonl as train/metrics.MetricsLog writes it (rank 0): train records every
    log_every steps, validation records per epoch; the last line not yet complete."""
    recs = []
    for step in range(1, 13):
        recs.append({"step": step, "time": 1796000000.0 + step, "train/loss": 4.0 / step, "train/lr": 1e-4 * min(1, step / 4),
                     "train/grad_norm": 2.0 + 0.1 * step, "train/samples_per_s": 30.0 + step, "train/epoch": step / 6})
        if step % 6 == 0:
            recs.append({"step": step, "time": 1796000000.5 + step, "val/val_mean_r": 10.0 * step / 6,
                         "val/val_mean_all": 8.0 * step / 6})
    (run / "metrics").mkdir(parents=True)
    # The last line cut short: a run still writing when the report is made.
    (run / "metrics" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 13, "train/lo')
    return recs


def write_retrieval(eval_dir: Path, rows: list[dict]) -> tuple[dict, dict]:
    """retrieval.json as clip_eval.write_results writes it (six_directions on embeddings of the
    test rows), and retrieval_examples.json in the format docs/report.md specifies, its top 5
    computed here with NumPy (stable order: ties by gallery index, as retrieval.py)."""
    test = sorted((r for r in rows if r["split"] == "test" and r["is_eval_representative"]), key=lambda r: r["sample_id"])
    ids, keys = [r["sample_id"] for r in test], [r["normalized_caption_key"] for r in test]
    rng = np.random.default_rng(0)
    base = rng.normal(size=(len(ids), 16)).astype(np.float32)
    models = {"untrained tiny CLIP": {m: rng.normal(size=base.shape).astype(np.float32) for m in ("rgb", "ir", "text")},
              "trained tiny CLIP": {m: base + 0.3 * rng.normal(size=base.shape).astype(np.float32) for m in ("rgb", "ir", "text")}}
    results, examples = {}, {}
    for name, emb in models.items():
        results[name] = {"split": "test", "rows": len(ids), "model": "tiny", "pretrained": "x.pt",
                         "overall": six_directions(emb, ids, keys), "per_source": {}}
        by_src = defaultdict(list)
        for i, r in enumerate(test):
            by_src[r["source"]].append(i)
        for s, idx in sorted(by_src.items()):
            results[name]["per_source"][s] = six_directions({k: v[idx] for k, v in emb.items()}, [ids[i] for i in idx],
                                                            [keys[i] for i in idx])
        exs = []
        unit = {m: v / np.linalg.norm(v, axis=1, keepdims=True) for m, v in emb.items()}
        for a, b in [("ir", "text"), ("text", "ir"), ("rgb", "ir"), ("ir", "rgb"), ("rgb", "text"), ("text", "rgb")]:
            pos = keys if "text" in (a, b) else ids
            for q in range(3):  # the first 3 queries by sample_id
                sim = unit[b] @ unit[a][q]
                top = np.argsort(-sim, kind="stable")[:5]
                exs.append({"direction": f"{NAMES[a]}->{NAMES[b]}", "query": ids[q],
                            "top": [{"sample_id": ids[j], "score": round(float(sim[j]), 4), "hit": pos[j] == pos[q]}
                                    for j in top]})
        examples[name] = {"split": "test", "k": 5, "examples": exs}
    results["trained tiny CLIP"]["zero_shot_ir"] = {"classes": 3, "images": 2, "top1": 50.0, "top5": 100.0}
    (eval_dir / "retrieval.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    (eval_dir / "retrieval_examples.json").write_text(json.dumps(examples, indent=1))
    return results, examples


def write_vlm(eval_dir: Path, rows: list[dict]) -> list[dict]:
    """vlm_results.json and vlm_predictions.jsonl as vlm_eval.write_vlm_results writes them,
    scored with vlm_metrics; one failed generation and one prediction with markup."""
    items = sorted((r for r in rows if r["split"] == "test" and r["ir_aware_caption"]), key=lambda r: r["sample_id"])
    results = {}
    for model in (BASE, LORA):
        preds = []
        for r in items:
            for task, refs in (("caption", [r["ir_aware_caption"], r["caption"]]), ("scene", ["airport"])):
                pred = f"{model} says: bright runway in {task}"
                status = "ok"
                if model == LORA and task == "scene" and r is items[0]:
                    pred, status = "", "generation_error: RuntimeError: boom"
                if model == LORA and task == "caption" and r is items[1]:
                    pred = INJECTION
                preds.append({"sample_id": r["sample_id"], "source": r["source"], "task": task,
                              "references": json.dumps(refs), "prediction": pred, "status": status})
        scored = [{"sample_id": p["sample_id"], "task": p["task"],
                   "scores": score_row(p["task"], p["prediction"] if p["status"] == "ok" else "", json.loads(p["references"]))}
                  for p in preds]
        results[model] = {"split": "test", "model": "tiny", "adapter": "", "items": len(preds),
                          "images": len({p["sample_id"] for p in preds}), "failed": sum(p["status"] != "ok" for p in preds),
                          "metrics": aggregate(scored, 50), "predictions": preds}
    summary = {name: {k: v for k, v in r.items() if k != "predictions"} for name, r in results.items()}
    (eval_dir / "vlm_results.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    lines = [json.dumps({"model": name, **p}) for name, r in results.items() for p in r["predictions"]]
    (eval_dir / "vlm_predictions.jsonl").write_text("\n".join(lines) + "\n")
    return [json.loads(line) for line in lines]


def write_ledger(out: Path) -> RunLedger:
    led = RunLedger(output=str(out), config_fingerprint="cfg0123", prices={"gpu_hour_usd": 2.0})
    led.stages["translate"].gpus = 1.0
    led.stages["translate"].add({"units": 3, "rows": 24, "busy_s": 36.0}, led.prices)  # 36 GPU-s at $2/h: $0.02
    led.stages["caption"].add({"api_requests": 3, "api_usd": 0.015}, led.prices)
    led.write(Storage(), "completed")
    return led


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    b = write_build(base)
    extra = add_filtered_rows(b.out, b.rows)
    rejects = b.rejects + add_rejects(b.out)
    run = base / "train" / "clip-test"
    recs = write_metrics(run)
    eval_dir = base / "eval"
    eval_dir.mkdir()
    retrieval, examples = write_retrieval(eval_dir, b.rows)
    predictions = write_vlm(eval_dir, b.rows)
    ledger = write_ledger(b.out)
    uri = write_report(str(b.out), [str(run)], [str(eval_dir)], examples=EXAMPLES, per_split=PER_SPLIT, thumb=THUMB)
    return {"build": b, "rows": b.rows + extra, "extra_ids": {r["sample_id"] for r in extra}, "rejects": rejects, "run": run, "records": recs, "eval": eval_dir,
            "retrieval": retrieval, "examples": examples, "predictions": predictions, "ledger": ledger,
            "uri": uri, "page": Page(Path(uri).read_text())}


# ---------------------------------------------------------------------------------------
# Reading the page.


class Page(HTMLParser):
    """Every element with its attributes and section, the images with the row they sit in, the
    text per section, and every table's cell texts."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.text = text
        self.elements: list[tuple[str, dict, str | None]] = []
        self.images: list[dict] = []
        self.section_text: dict[str | None, list[str]] = defaultdict(list)
        self.tables: list[dict] = []
        self._section, self._row_id, self._table, self._cell = None, None, None, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a, self._section))
        if tag == "section":
            self._section = a.get("id")
        elif tag == "table":
            self._table = {"id": a.get("id"), "section": self._section, "rows": []}
            self.tables.append(self._table)
        elif tag == "tr":
            self._row_id = a.get("data-sample-id")
            if self._table is not None:
                self._table["rows"].append([])
        elif tag in ("td", "th") and self._table is not None and self._table["rows"]:
            self._cell = []
            self._table["rows"][-1].append(self._cell)
        elif tag == "img":
            self.images.append({**a, "section": self._section, "row": self._row_id})

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        self.section_text[self._section].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def text_of(self, section: str) -> str:
        return " ".join(self.section_text[section])

    def table(self, table_id: str) -> list[list[str]]:
        t = next(t for t in self.tables if t["id"] == table_id)
        return [["".join(c).strip() for c in row] for row in t["rows"]]

    def tags(self, tag: str, section: str | None = None, **attrs) -> list[dict]:
        return [a for t, a, s in self.elements if t == tag and (section is None or s == section)
                and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def decode(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64"), head
    im = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    im.load()
    return im


def mean_color(jpeg_or_image) -> np.ndarray:
    im = jpeg_or_image if isinstance(jpeg_or_image, Image.Image) else Image.open(io.BytesIO(jpeg_or_image))
    return np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0)


# ---------------------------------------------------------------------------------------
# Structure, no browser.


def test_every_section_is_there_and_every_image_decodes(world):
    page = world["page"]
    ids = [a["id"] for a in page.tags("section")]
    assert ids == [sid for sid, _ in SECTIONS]
    assert all(page.tags("h2", sid) for sid in ids)
    assert page.images, "no images at all"
    for img in page.images:
        im = decode(img["src"])
        assert im.width > 0 and im.height > 0
        if img["class"] == "thumb":
            assert max(im.size) <= THUMB, (img["alt"], im.size)
            big = img["row"] and img["row"] in world["extra_ids"]
            assert im.size == ((THUMB, round(THUMB * 120 / 200)) if big else (24, 24)), (img["alt"], im.size)
        else:
            assert img["class"] == "chart" and im.format == "PNG"
    # Nothing from outside: data: images only, in-page links only, no external script or style.
    assert not page.tags("link") and not page.tags("iframe") and not page.tags("script")
    for tag, a, _ in page.elements:
        assert "src" not in a or a["src"].startswith("data:"), (tag, a)
        assert "href" not in a or a["href"].startswith("#"), (tag, a)
    csp = page.tags("meta", http_equiv="Content-Security-Policy")
    assert csp and "default-src 'none'" in csp[0]["content"] and "script-src 'none'" in csp[0]["content"]


def test_composition_tables_are_the_rows_written(world):
    page, rows = world["page"], world["rows"]
    want = Counter((r["source"], r["split"]) for r in rows)
    t2 = page.table("table2")
    assert t2[0] == ["Source", "Total", "Train", "Val", "Test"]
    got = {r[0]: [int(x.replace(",", "")) for x in r[1:]] for r in t2[1:]}
    for src in {r["source"] for r in rows}:
        per = [want[(src, s)] for s in SPLITS]
        assert got[src] == [sum(per), *per]
    assert got["Total"] == [len(rows), *(sum(want[(s, sp)] for s in {r["source"] for r in rows}) for sp in SPLITS)]
    accepted = Counter(r["split"] for r in rows if r["ir_caption_status"] == "accepted")
    t3 = {r[0]: int(r[1]) for r in page.table("table3-accepted")[1:]}
    assert t3 == {f"IR-aware {s}": accepted[s] for s in SPLITS}
    selected = Counter(r["split"] for r in rows if r["ir_caption_status"] != "not_selected")
    assert {r[0]: int(r[1]) for r in page.table("table3-selected")[1:]} == {f"IR-aware {s}": selected[s] for s in SPLITS}
    sizes = {r[0]: [int(x) for x in r[1:]] for r in page.table("split-sizes")[1:]}
    reps = Counter(r["split"] for r in rows if r["is_eval_representative"])
    assert sizes == {s: [sum(want[(src, s)] for src in {r["source"] for r in rows}), accepted[s], reps[s]] for s in SPLITS}


def test_contact_sheets_show_the_smallest_ids_with_their_own_images(world):
    page, rows = world["page"], world["rows"]
    by_id = {r["sample_id"]: r for r in rows}
    want = set()
    for src in {r["source"] for r in rows}:
        for s in SPLITS:
            want |= set(sorted(r["sample_id"] for r in rows if r["source"] == src and r["split"] == s)[:PER_SPLIT])
    shown = [a["data-sample-id"] for a in page.tags("tr", "contact-sheets") if "data-sample-id" in a]
    assert sorted(shown) == sorted(want)
    imgs = [i for i in page.images if i["section"] == "contact-sheets"]
    assert len(imgs) == 2 * len(want)
    for img in imgs:
        kind, sid = img["alt"].split(" ", 1)
        assert sid == img["row"]
        src = by_id[sid]["rgb_jpeg" if kind == "RGB" else "ir_jpeg"]  # the right picture in the right column
        assert np.abs(mean_color(decode(img["src"])) - mean_color(src)).max() < 8, img["alt"]
    text = page.text_of("contact-sheets")
    assert all(by_id[sid]["caption"] in text for sid in want)


def test_every_reject_reason_has_its_examples_with_what_was_recorded(world):
    page, rejects = world["page"], world["rejects"]
    groups = defaultdict(list)
    for r in rejects:
        groups[f"{r['stage']}:{r['reason']}"].append(r)
    counts = {r[0]: int(r[1]) for r in page.table("reject-counts")[1:]}
    assert counts == {k: len(v) for k, v in groups.items()}
    assert {a["data-reason"] for a in page.tags("h3", "rejects")} == set(groups)
    shown = [a["data-sample-id"] for a in page.tags("tr", "rejects") if "data-sample-id" in a]
    for key, rs in groups.items():
        expected = sorted(r["sample_id"] for r in rs)[:EXAMPLES]
        assert [s for s in shown if s in {r["sample_id"] for r in rs}] == expected, key
    text = page.text_of("rejects")
    for r in rejects:
        if r["sample_id"] in shown:
            assert r["detail"] in text and all(c in text for c in r["raw_captions"])
            assert (r["source_locator"] or "(refused locator)") in text
    assert not [i for i in page.images if i["section"] == "rejects"]


def test_filter_codes_show_their_rows_ir_images_and_captions(world):
    page, rows = world["page"], world["rows"]
    by_code = defaultdict(list)
    for r in rows:
        if r["ir_caption_status"].startswith("filtered:"):
            for c in r["ir_caption_status"].removeprefix("filtered:").split("+"):
                by_code[c].append(r)
    assert {a["data-code"] for a in page.tags("h3", "caption-filters")} == set(by_code)
    text = page.text_of("caption-filters")
    for code, rs in by_code.items():
        assert f"{code} ({len(rs)})" in text
    imgs = [i for i in page.images if i["section"] == "caption-filters"]
    assert len(imgs) == sum(min(EXAMPLES, len(v)) for v in by_code.values())
    by_id = {r["sample_id"]: r for r in rows}
    for img in imgs:
        r = by_id[img["row"]]
        assert np.abs(mean_color(decode(img["src"])) - mean_color(r["ir_jpeg"])).max() < 8
        assert r["ir_aware_caption"] in text
    status = {r[0]: int(r[1]) for r in page.table("ir-caption-status")[1:]}
    assert status == Counter(r["ir_caption_status"] for r in rows)


def test_caption_lengths(world):
    page, rows = world["page"], world["rows"]
    kinds = {"original": [r["caption"] for r in rows],
             "IR-aware accepted": [r["ir_aware_caption"] for r in rows if r["ir_caption_status"] == "accepted"],
             "IR-aware filtered": [r["ir_aware_caption"] for r in rows if r["ir_caption_status"].startswith("filtered:")]}
    got = {r[0]: r[1:] for r in page.table("caption-length-stats")[1:]}
    for k, caps in kinds.items():
        n = [len(c.split()) for c in caps]
        assert got[k] == [str(len(n)), f"{sum(n) / len(n):.2f}", str(min(n)), str(max(n))], k
    assert len([i for i in page.images if i["section"] == "caption-lengths"]) == 1


def test_training_curves_and_last_values(world):
    page, recs = world["page"], world["records"]
    assert [i["class"] for i in page.images if i["section"] == "training"] == ["chart"]
    metrics = next(t for t in page.tables if t["section"] == "training")
    got = {r[0]: r for r in [["".join(c) for c in row] for row in metrics["rows"][1:]]}
    train = [r for r in recs if "train/loss" in r]
    assert got["train/loss"][1:4] == [str(len(train)), str(train[-1]["step"]), f"{train[-1]['train/loss']:.4g}"]
    val = [r["val/val_mean_r"] for r in recs if "val/val_mean_r" in r]
    assert got["val/val_mean_r"][5] == f"{max(val):.4g}"
    assert {"train/lr", "train/grad_norm", "train/samples_per_s", "val/val_mean_all"} <= set(got)


def test_retrieval_tables_charts_and_examples(world):
    page, results, examples = world["page"], world["retrieval"], world["examples"]
    overall = page.table("retrieval-overall")
    assert overall[0][:3] == ["Model", "Mean R", "IR→Text R@1/5/10"]
    for row in overall[1:]:
        r = results[row[0]]["overall"]
        assert row[1] == f"{r['mean_r']:.2f}"
        assert row[2] == " / ".join(f"{r['IR->Text'][k]:.2f}" for k in (1, 5, 10))
    assert len([i for i in page.images if i["section"] == "retrieval"]) == 1
    assert "top-1 50.00%" in page.text_of("retrieval")
    # Examples: the first EXAMPLES queries of each direction, hits marked as in the file.
    want_hits = want_cells = 0
    for m in examples.values():
        seen = Counter()
        for ex in m["examples"]:
            if seen[ex["direction"]] < EXAMPLES:
                seen[ex["direction"]] += 1
                want_hits += sum(r["hit"] for r in ex["top"])
                want_cells += len(ex["top"])
    hits = page.tags("td", "retrieval-examples", **{"class": "hit"})
    misses = page.tags("td", "retrieval-examples", **{"class": "miss"})
    assert (len(hits), len(hits) + len(misses)) == (want_hits, want_cells)
    assert len(page.tags("span", "retrieval-examples", **{"class": "hit"})) == want_hits  # the ✓ marks
    assert want_hits > 0 and misses


def test_vlm_predictions_beside_references_and_markup_is_text(world):
    page, preds = world["page"], world["predictions"]
    assert page.table("table5")[0][0] == "Setting"
    assert [a["data-task"] for a in page.tags("h4", "vlm") if "data-task" in a] == ["caption", "scene"]
    text = page.text_of("vlm")
    for task in ("caption", "scene"):
        ids = sorted({p["sample_id"] for p in preds if p["task"] == task})[:EXAMPLES]
        for p in preds:
            if p["task"] == task and p["sample_id"] in ids:
                assert all(r in text for r in json.loads(p["references"]))
                assert (p["prediction"] or p["status"]) in text
    assert "generation_error: RuntimeError: boom" in text
    # Markup in a prediction or a caption is shown as text, never parsed into elements.
    assert INJECTION in text and INJECTION in page.text_of("caption-filters")
    assert not page.tags("script") and all(i.get("src", "").startswith("data:") for i in page.images)


def test_cost_ledger(world):
    page, led = world["page"], world["ledger"]
    text = page.text_of("cost")
    assert led.run_id in text
    assert f"total: ${36 / 3600 * 2.0 + 0.015:.4f} spent" in text
    assert "1 file(s) under ledger/ are not run ledgers" in text  # the fixture's empty ledger/run.json


def test_sections_without_data_say_so(world, tmp_path):
    uri = write_report(str(world["build"].out), out=str(tmp_path / "r.html"))
    page = Page(Path(uri).read_text())
    assert [a["id"] for a in page.tags("section")] == [sid for sid, _ in SECTIONS]
    for sid in ("training", "retrieval", "retrieval-examples", "vlm"):
        assert page.tags("p", sid, **{"class": "empty"}), sid
    for sid in ("composition", "contact-sheets", "rejects", "cost"):
        assert not page.tags("p", sid, **{"class": "empty"}), sid


def test_size_is_bounded_by_the_parameters(world, tmp_path):
    args = (str(world["build"].out), [str(world["run"])], [str(world["eval"])])
    small = Page(Path(write_report(*args, out=str(tmp_path / "s.html"), examples=1, per_split=1, thumb=32)).read_text())
    big = Page(Path(write_report(*args, out=str(tmp_path / "b.html"), examples=3, per_split=3, thumb=128)).read_text())
    n = lambda p, s: len([i for i in p.images if i["section"] == s])  # noqa: E731
    sources = len({r["source"] for r in world["rows"]})
    assert n(small, "contact-sheets") == 2 * sources * len(SPLITS)
    assert n(small, "retrieval-examples") < n(big, "retrieval-examples")
    assert max(max(decode(i["src"]).size) for i in small.images if i["class"] == "thumb") <= 32
    assert len(small.text) < len(big.text)


def test_not_a_build_output_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="is it a build's output"):
        write_report(str(tmp_path / "nothing"))


# ---------------------------------------------------------------------------------------
# In a browser.


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90)


NO_CHROMIUM = ("no Chromium (/usr/bin/chromium, or `chromium` on PATH): `apt-get install -y chromium` to run the "
               "browser test")


def check_in_chromium(uri: str, tmp_path: Path) -> None:
    """Open a report written with selfcheck=True: every image loaded, no console error, not blank."""
    url = Path(uri).resolve().as_uri()
    n_images = len(Page(Path(uri).read_text()).images)
    dom = chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = next(a for t, a, _ in Page(dom.stdout).elements if t == "body")
    assert body.get("data-selfcheck") == "done", "the page's self-check did not run"
    assert body["data-images"] == str(n_images) and n_images > 0
    assert body["data-broken-images"] == "0"
    assert json.loads(body["data-errors"]) == []
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]  # Chromium logs every console message
    assert not console, console
    shot = tmp_path / "report.png"
    res = chromium([f"--screenshot={shot}", "--window-size=1280,4000", url], tmp_path / "profile-shot")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (4000, 1280)
    assert pixels.var() > 100, "the screenshot is blank"
    top = pixels[:1000]
    assert (top < 128).mean() > 0.005, "no text or pictures at the top of the page"


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_report_in_headless_chromium(world, tmp_path):
    args = (str(world["build"].out), [str(world["run"])], [str(world["eval"])])
    uri = write_report(*args, out=str(tmp_path / "report.html"), examples=EXAMPLES, per_split=PER_SPLIT, selfcheck=True)
    check_in_chromium(uri, tmp_path)
