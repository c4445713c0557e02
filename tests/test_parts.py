"""WritePart, the last worker of the build, called directly (no Ray): from a part's ingest stage
file, IR stage file, caption stage file and assignment written here, every ingest row ends as
exactly one triplet or one reject with its reason, and a taken-down id in neither."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusionrs.build.ingest import INGEST_SCHEMA
from fusionrs.build.parts import IR_STAGE_SCHEMA, WritePart
from fusionrs.config import load_config
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import Layout
from fusionrs.dataset.schema import REJECT_SCHEMA, TRIPLET_SCHEMA

PART = "A.0123abcd"
FPS = {"ingest": "fp-ingest", "translate": "fp-ir", "caption": "fp-cap"}
GOOD_IR_CAPTION = ("Bright runway outlines with strong grayscale contrast against dark low-texture grass "
                   "around the airport.")


def _ingest_row(sid: str, reject: str | None = None, detail: str | None = None) -> dict:
    return {"sample_id": sid, "source": "A", "source_format": "rs5m_wds", "source_record_id": f"tar0/{sid}",
            "source_locator": f"tar0.tar/{sid}.jpg", "class_name": None, "raw_captions": [f"An airport {sid}."],
            "caption": None if reject else f"an airport {sid}", "captions": [] if reject else [f"an airport {sid}"],
            "caption_status": "original", "caption_sentence_reasons": ["ok"],
            "caption_key": None if reject else f"key-{sid}", "rgb_jpeg": None if reject else f"rgb {sid}".encode(),
            "rgb_sha256": None if reject else f"sha-{sid}", "rgb_phash": None if reject else "0123456789abcdef",
            "rgb_width": 64, "rgb_height": 64, "image_note": None, "reject_reason": reject, "reject_detail": detail}


def _ir_row(sid: str, status: str = "ok") -> dict:
    ok = status == "ok"
    return {"sample_id": sid, "ir_jpeg": f"ir {sid}".encode() if ok else None, "ir_status": status,
            "ir_sha256": f"irsha-{sid}" if ok else None, "ir_phash": "fedcba9876543210" if ok else None}


def _assign(split: str, iraware: bool = False, eval_rep: bool = False) -> dict:
    return {"split": split, "group": f"group-{split}", "group_size": 2, "eval_rep": eval_rep, "iraware": iraware}


@pytest.fixture()
def written(tmp_path):
    """One part of 12 rows, each with its own fate; returns (what WritePart returned, triplets by
    id, rejects by id, the expected fates)."""
    cfg = load_config(None, [f"output={tmp_path / 'out'}", "sources=[{name: A, format: rs5m_wds, root: /nonexistent-src}]"])
    storage, layout = Storage(), Layout(cfg.output)
    ingest = [_ingest_row(s) for s in ("A-train", "A-val", "A-test-acc", "A-filtered", "A-capfail", "A-nocap",
                                        "A-dup", "A-irfail", "A-irmissing", "A-tomb")]
    ingest.insert(3, _ingest_row("A-bad", "not_an_image", "PIL could not identify the file"))
    ingest.append(_ingest_row("A-tomb-bad", "too_small", "8x8"))
    ir = [_ir_row(s) for s in ("A-train", "A-val", "A-test-acc", "A-filtered", "A-capfail", "A-nocap", "A-dup", "A-tomb")]
    ir.append(_ir_row("A-irfail", "ir_blank"))
    assign = {"A-train": _assign("train"), "A-val": _assign("val", eval_rep=True),
              "A-test-acc": _assign("test", iraware=True), "A-filtered": _assign("test", iraware=True),
              "A-capfail": _assign("train", iraware=True), "A-nocap": _assign("train", iraware=True),
              # A-dup: usable and translated, but the plan gave its id to a row of another part.
              "A-tomb": _assign("train")}
    captions = [
        {"sample_id": "A-test-acc", "ir_aware_caption": GOOD_IR_CAPTION, "ir_caption_raw_status": "ok",
         "ir_caption_cost_usd": 0.002},
        {"sample_id": "A-filtered", "ir_aware_caption": "A red runway with heat rising from the hot asphalt surface.",
         "ir_caption_raw_status": "ok", "ir_caption_cost_usd": 0.003},
        {"sample_id": "A-capfail", "ir_aware_caption": None, "ir_caption_raw_status": "failed:http_500",
         "ir_caption_cost_usd": 0.001},
    ]
    storage.write_parquet(layout.ingest(FPS["ingest"], PART), pa.Table.from_pylist(ingest, schema=INGEST_SCHEMA))
    storage.write_parquet(layout.ir(FPS["translate"], PART), pa.Table.from_pylist(ir, schema=IR_STAGE_SCHEMA))
    cap_uri = layout.caption(FPS["caption"], PART, "sel")
    storage.write_parquet(cap_uri, pa.table({
        "sample_id": pa.array([c["sample_id"] for c in captions], pa.string()),
        "ir_aware_caption": pa.array([c["ir_aware_caption"] for c in captions], pa.string()),
        "ir_caption_raw_status": pa.array([c["ir_caption_raw_status"] for c in captions], pa.string()),
        "ir_caption_cost_usd": pa.array([c["ir_caption_cost_usd"] for c in captions], pa.float64())}))

    write = WritePart(cfg, storage, FPS, tombstoned=frozenset({"A-tomb", "A-tomb-bad"}))
    ret = write({"part": PART, "assign": json.dumps(assign), "caption_uri": cap_uri, "caption_failed": 1,
                 "stats": json.dumps({"units": 1})})

    out = tmp_path / "out"
    triplet_files = sorted((out / "triplets").glob("*.parquet"))
    triplets = {}
    for f in triplet_files:
        t = pq.read_table(f)
        assert t.schema.equals(TRIPLET_SCHEMA), f
        for r in t.to_pylist():
            assert r["sample_id"] not in triplets, r["sample_id"]
            triplets[r["sample_id"]] = {**r, "_file": f.name}
    rejects_t = pq.read_table(out / "rejects" / f"{PART}.parquet")
    assert rejects_t.schema.equals(REJECT_SCHEMA)
    rejects = {}
    for r in rejects_t.to_pylist():
        assert r["sample_id"] not in rejects, r["sample_id"]
        rejects[r["sample_id"]] = r
    fates = {  # id → ("triplet", split) or ("reject", stage, reason); tombstoned ids: absent
        "A-train": ("triplet", "train"), "A-val": ("triplet", "val"), "A-test-acc": ("triplet", "test"),
        "A-filtered": ("triplet", "test"), "A-capfail": ("triplet", "train"), "A-nocap": ("triplet", "train"),
        "A-bad": ("reject", "ingest", "not_an_image"), "A-dup": ("reject", "ingest", "duplicate_sample_id"),
        "A-irfail": ("reject", "translate", "ir_blank"), "A-irmissing": ("reject", "translate", "ir_missing"),
    }
    return ret, triplets, rejects, fates, {r["sample_id"]: r for r in ingest}, assign


def test_every_input_is_exactly_one_triplet_or_one_reject(written):
    ret, triplets, rejects, fates, ingest, _ = written
    assert not set(triplets) & set(rejects)
    assert set(triplets) | set(rejects) == set(fates)  # nothing lost, nothing invented
    for sid, fate in fates.items():
        if fate[0] == "triplet":
            assert sid in triplets and triplets[sid]["split"] == fate[1], sid
        else:
            assert (rejects[sid]["stage"], rejects[sid]["reason"]) == fate[1:], sid
    want_splits = sorted({f[1] for f in fates.values() if f[0] == "triplet"})
    assert ret["triplets"] == sum(f[0] == "triplet" for f in fates.values()) == 6
    assert ret["rejects"] == sum(f[0] == "reject" for f in fates.values()) == 4
    assert json.loads(ret["triplet_splits"]) == want_splits
    assert json.loads(ret["stats"])["rows"] == 10 and ret["caption_failed"] == 1


def test_a_tombstoned_id_is_in_neither_file(written):
    _, triplets, rejects, _, ingest, assign = written
    for sid in ("A-tomb", "A-tomb-bad"):  # one would be a triplet, the other an ingest reject
        assert sid in ingest and sid not in triplets and sid not in rejects
    assert "A-tomb" in assign


def test_duplicate_sample_id_reject_keeps_the_rows_provenance(written):
    _, _, rejects, _, ingest, _ = written
    r, src = rejects["A-dup"], ingest["A-dup"]
    assert r == {"sample_id": "A-dup", "source": "A", "source_record_id": src["source_record_id"],
                 "source_locator": src["source_locator"], "stage": "ingest", "reason": "duplicate_sample_id",
                 "detail": None, "caption_status": src["caption_status"], "raw_captions": src["raw_captions"]}


def test_ingest_and_translate_rejects_carry_their_reason_and_detail(written):
    _, _, rejects, _, ingest, _ = written
    bad = rejects["A-bad"]
    assert (bad["stage"], bad["reason"], bad["detail"]) == ("ingest", "not_an_image", "PIL could not identify the file")
    assert bad["raw_captions"] == ingest["A-bad"]["raw_captions"] and bad["caption_status"] == "original"
    assert (rejects["A-irfail"]["reason"], rejects["A-irfail"]["detail"]) == ("ir_blank", None)
    assert (rejects["A-irmissing"]["reason"], rejects["A-irmissing"]["detail"]) == ("ir_missing", None)


def test_triplet_rows_join_ingest_ir_assignment_and_caption(written):
    _, triplets, _, _, ingest, assign = written
    for sid, t in triplets.items():
        r, a = ingest[sid], assign[sid]
        assert t["_file"] == f"{PART}-{a['split']}.parquet"  # one file per split
        assert (t["source"], t["source_record_id"], t["source_locator"]) == (r["source"], r["source_record_id"],
                                                                             r["source_locator"])
        assert (t["split"], t["group_id"], t["group_size"], t["is_eval_representative"]) == (
            a["split"], a["group"], a["group_size"], a["eval_rep"])
        assert (t["caption"], t["captions"], t["normalized_caption_key"]) == (r["caption"], r["captions"], r["caption_key"])
        assert (t["rgb_jpeg"], t["rgb_sha256"], t["rgb_phash"]) == (r["rgb_jpeg"], r["rgb_sha256"], r["rgb_phash"])
        assert (t["ir_jpeg"], t["ir_status"], t["ir_sha256"]) == (f"ir {sid}".encode(), "ok", f"irsha-{sid}")
    # The IR-aware caption column, by the row's selection and its captioner outcome.
    expect = {
        "A-train": (None, "not_selected", 0.0), "A-val": (None, "not_selected", 0.0),
        "A-test-acc": (GOOD_IR_CAPTION, "accepted", 0.002),
        "A-capfail": (None, "failed:http_500", 0.001),  # the captioner's failure, with what it cost
        "A-nocap": (None, "failed:not_captioned", 0.0),  # selected but absent from the caption file
    }
    for sid, want in expect.items():
        t = triplets[sid]
        assert (t["ir_aware_caption"], t["ir_caption_status"], t["ir_caption_cost_usd"]) == want, sid
    f = triplets["A-filtered"]  # kept for audit, with every strict-v3 code that matched
    assert f["ir_aware_caption"].startswith("A red runway") and f["ir_caption_cost_usd"] == 0.003
    codes = f["ir_caption_status"].removeprefix("filtered:").split("+")
    assert f["ir_caption_status"].startswith("filtered:") and {"heat", "temperature", "rgb_color"} <= set(codes)


def test_two_usable_rows_with_one_id_in_a_part_give_one_triplet_and_one_reject(tmp_path):
    """The plan assigns an id once; a second usable row with that id in the same part is a
    duplicate_sample_id reject (never a second triplet, never dropped)."""
    cfg = load_config(None, [f"output={tmp_path / 'out'}", "sources=[{name: A, format: rs5m_wds, root: /nonexistent-src}]"])
    storage, layout = Storage(), Layout(cfg.output)
    first, second = _ingest_row("A-same"), {**_ingest_row("A-same"), "source_record_id": "tar1/A-same"}
    storage.write_parquet(layout.ingest(FPS["ingest"], PART), pa.Table.from_pylist([first, second], schema=INGEST_SCHEMA))
    storage.write_parquet(layout.ir(FPS["translate"], PART), pa.Table.from_pylist([_ir_row("A-same")],
                                                                                   schema=IR_STAGE_SCHEMA))
    ret = WritePart(cfg, storage, FPS)({"part": PART, "assign": json.dumps({"A-same": _assign("train")}),
                                        "caption_uri": "", "caption_failed": 0, "stats": json.dumps({"units": 1})})
    assert (ret["triplets"], ret["rejects"]) == (1, 1)
    triplet = pq.read_table(tmp_path / "out" / "triplets" / f"{PART}-train.parquet").to_pylist()
    reject = pq.read_table(tmp_path / "out" / "rejects" / f"{PART}.parquet").to_pylist()
    assert [t["source_record_id"] for t in triplet] == ["tar0/A-same"]
    assert [(r["source_record_id"], r["reason"]) for r in reject] == [("tar1/A-same", "duplicate_sample_id")]
    assert "earlier row" in reject[0]["detail"]
