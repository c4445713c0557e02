"""Hostile sources (docs/security.md): records that try to read outside their root, hang the
build or sink it, mixed with good records. Every case is a triplet, a reason-coded reject, or a
clear error before anything is written; no good record is lost.

The expectations are the test's own: each planted record says what must become of it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from fusionrs.build.clean import CaptionCleaner
from fusionrs.build.ingest import ingest_unit
from fusionrs.build.readers import SourceError, plan_units
from fusionrs.config import ConfigError, load_config
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import split_of_file

REPO = Path(__file__).resolve().parents[1]
CAPTION = "many green trees and a river near some buildings"


def jpeg(seed: int, size=(64, 48), exif_orientation: int | None = None) -> bytes:
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3)).astype(np.uint8)
    a[: size[1] // 2] //= 2  # top half darker: orientation is visible
    img, buf = Image.fromarray(a), io.BytesIO()
    kw = {}
    if exif_orientation:
        ex = img.getexif()
        ex[0x0112] = exif_orientation
        kw["exif"] = ex.tobytes()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def karpathy(images: list) -> str:
    return json.dumps({"images": images, "dataset": "x"}, ensure_ascii=True)


def img_entry(name, caption=CAPTION, **extra):
    return {"filename": name, "sentences": [{"raw": caption}], **extra}


@pytest.fixture()
def hostile(tmp_path):
    """A Karpathy source and an RS5M source full of traps, and what each record must become."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg(99))
    k = tmp_path / "src" / "K"
    (k / "img").mkdir(parents=True)
    # record id → what its rows must be ("triplet" or reject reasons). Entries refused when the
    # annotations are read are identified by their position: "#entry-<index>".
    expect: dict[str, list[str]] = {}
    images = []
    PLAN_TIME = ("unsafe_locator", "bad_record")

    def add(name, outcome, **kw):
        images.append(img_entry(name, **kw))
        key = f"#entry-{len(images) - 1}" if outcome in PLAN_TIME else name
        expect.setdefault(key, []).append(outcome)

    for i in range(6):
        (k / "img" / f"good{i}.jpg").write_bytes(jpeg(i))
        add(f"img/good{i}.jpg", "triplet")
    (k / "img" / "rotated.jpg").write_bytes(jpeg(50, exif_orientation=6))
    add("img/rotated.jpg", "triplet")
    (k / "img" / "bidi.jpg").write_bytes(jpeg(51))
    add("img/bidi.jpg", "triplet", caption="many green trees\u202e and a river near\x00 some buildings")
    add(f"file://{outside / 'secret.jpg'}", "unsafe_locator")
    add("s3://other-bucket/key.jpg", "unsafe_locator")
    add("../outside/secret.jpg", "unsafe_locator")
    add(str(outside / "secret.jpg"), "unsafe_locator")
    add("img/nul\x00.jpg", "unsafe_locator")
    add("C:\\windows\\x.jpg", "unsafe_locator")
    images.append(img_entry("./img/good0.jpg"))  # the same file as img/good0.jpg: a second row of it
    expect["img/good0.jpg"].append("duplicate_record_id")
    os.symlink(outside / "secret.jpg", k / "img" / "link-out.jpg")
    add("img/link-out.jpg", "outside_root")
    os.symlink(k / "img" / "good1.jpg", k / "img" / "link-in.jpg")
    add("img/link-in.jpg", "triplet")
    os.symlink("/dev/zero", k / "img" / "zero.jpg")
    add("img/zero.jpg", "outside_root")
    os.mkfifo(k / "img" / "fifo.jpg")
    add("img/fifo.jpg", "not_a_regular_file")
    (k / "img" / "huge.jpg").write_bytes(jpeg(52) + b"\0" * 300_000)
    add("img/huge.jpg", "file_too_large")
    add("img/missing.jpg", "missing_file")
    (k / "img" / "sur.jpg").write_bytes(jpeg(53))
    bad_entries = [  # position → reason: entries that have no usable file name or text
        ({"sentences": [{"raw": CAPTION}]}, "bad_record"),
        (img_entry(7), "bad_record"),
        ("just a string", "bad_record"),
        ({"filename": "img/good2.jpg", "sentences": [{"raw": 42}]}, "bad_record"),
        ({"filename": "img/good3.jpg", "sentences": [{"raw": ["a", "list"]}]}, "bad_record"),
    ]
    base = len(images)
    for i, (e, reason) in enumerate(bad_entries):
        images.append(e)
        expect[f"#entry-{base + i}"] = [reason]
    text = karpathy(images)
    # A lone surrogate in a caption and in a file name (valid JSON escapes, undecodable text).
    text = text[:-len('], "dataset": "x"}')] + ', {"filename": "img/sur.jpg", "sentences": [{"raw": "bad \\ud800 text"}]}' \
        + ', {"filename": "img/\\udc80.jpg", "sentences": [{"raw": "fine caption of trees"}]}], "dataset": "x"}'
    expect[f"#entry-{len(images)}"] = ["bad_record"]
    expect[f"#entry-{len(images) + 1}"] = ["unsafe_locator"]
    (k / "dataset.json").write_text(text)

    # RS5M: tars with the same name in two folders, a truncated tar beside an intact one, hostile
    # member names, an adjacent duplicate key, and a source named so that naive ids would collide.
    r = tmp_path / "src" / "R"
    for sub in ("a", "b"):
        (r / sub).mkdir(parents=True)
        write_tar(r / sub / "shard.tar", [(f"k{i}", jpeg(100 + i + (10 if sub == "b" else 0)), CAPTION) for i in range(3)])
        for i in range(3):
            expect[f"{sub}/shard.tar/k{i}"] = ["triplet"]
    members = [("ok0", jpeg(120), CAPTION), ("../../evil", jpeg(121), CAPTION), ("ok1", jpeg(122), CAPTION)]
    write_tar(r / "hostile.tar", members, extra=[("/abs/evil2.img_content", jpeg(123))], dup=("ok1", jpeg(124)))
    expect.update({"hostile.tar/ok0": ["triplet"], "hostile.tar/ok1": ["triplet", "duplicate_record_id"]})
    full = io.BytesIO()
    write_tar(full, [(f"t{i}", jpeg(130 + i), CAPTION) for i in range(6)])
    (r / "trunc.tar").write_bytes(full.getvalue()[: len(full.getvalue()) * 2 // 3])  # breaks off in a member
    return {"tmp": tmp_path, "K": k, "R": r, "expect": expect}


def write_tar(target, records, extra=(), dup=None):
    f = open(target, "wb") if not isinstance(target, io.BytesIO) else target
    with tarfile.open(fileobj=f, mode="w") as tar:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
        for key, image, caption in records:
            add(f"{key}.img_content", image)
            add(f"{key}.caption", caption.encode())
        for name, data in extra:
            add(name, data)
        if dup:  # the same key again, right after: two records, the second a duplicate
            add(f"{dup[0]}.img_content", dup[1])
            add(f"{dup[0]}.caption", CAPTION.encode())
    if not isinstance(target, io.BytesIO):
        f.close()


def config(h, *overrides):
    return load_config(None, [f"output={h['tmp'] / 'out'}",
                              "sources=[{name: K, format: karpathy_json, root: %s, annotations: dataset.json}, "
                              "{name: R, format: rs5m_wds, root: %s}]" % (h["K"], h["R"]),
                              "ingest.max_file_bytes=100000", "ingest.records_per_unit=8", "translate.resolution=64",
                              "translate.min_actors=1", "translate.max_actors=1", "split.fractions.train=0.8",
                              "split.fractions.val=0.1", "split.fractions.test=0.1", "split.min_heldout_per_source=0",
                              *overrides])


def ingest_all(cfg):
    """Plan and ingest every unit in this process (no Ray): rows by source_record_id."""
    st, cleaner, rows = Storage(), CaptionCleaner(cfg.clean), {}
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("a read hung")))
    signal.alarm(60)  # a FIFO that blocks must fail this test, not hang it
    try:
        for src in cfg.sources:
            for unit in plan_units(src, st, cfg.ingest.records_per_unit):
                for row in ingest_unit(unit, cfg, st, cleaner).to_pylist():
                    rows.setdefault(row["source_record_id"], []).append(row)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rows


def test_every_hostile_record_is_a_reason_coded_reject_and_good_ones_stay(hostile):
    cfg = config(hostile)
    rows = ingest_all(cfg)
    for rid, outcomes in hostile["expect"].items():
        got = [r["reject_reason"] or "triplet" for r in rows.get(rid, [])]
        assert sorted(got) == sorted(outcomes), (rid, got, [r["reject_detail"] for r in rows.get(rid, [])])
    # Nothing outside the root was read: no row carries the secret image's bytes.
    secret = (hostile["tmp"] / "outside" / "secret.jpg").read_bytes()
    assert not any(r["rgb_jpeg"] == secret for rr in rows.values() for r in rr)
    # No locator in any row escapes: relative, no scheme, no `..`.
    for rr in rows.values():
        for r in rr:
            loc = r["source_locator"] or ""
            assert not loc.startswith("/") and "://" not in loc and ".." not in loc.split("/"), loc


def test_unsafe_locators_are_rejects_not_reads(hostile):
    rows = ingest_all(config(hostile))
    unsafe = [r for rr in rows.values() for r in rr if r["reject_reason"] == "unsafe_locator"]
    assert len(unsafe) >= 8 and all(r["rgb_jpeg"] is None for r in unsafe)
    assert all("\x00" not in (r["source_locator"] or "") for r in unsafe)  # printable in reports


def test_tars_same_name_truncated_hostile_members_and_duplicate_keys(hostile):
    rows = ingest_all(config(hostile))
    r = {k: v for k, v in rows.items() if k.split("/")[0] in ("a", "b", "hostile.tar", "trunc.tar")}
    assert all(f"{s}/shard.tar/k{i}" in r for s in "ab" for i in range(3))  # both same-named tars, whole
    assert r["hostile.tar/ok1"][0]["reject_reason"] is None
    assert [x["reject_reason"] for x in r["hostile.tar/ok1"]] == [None, "duplicate_record_id"]  # two records
    assert any(x["reject_reason"] == "unsafe_locator" for k, v in r.items() if k.startswith("hostile.tar/#member")
               for x in v)
    trunc = {k: v[0]["reject_reason"] for k, v in r.items() if k.startswith("trunc.tar/")}
    assert trunc.get("trunc.tar/#truncated") == "truncated_archive"
    assert sum(v is None for v in trunc.values()) >= 2  # the records before the break are kept


def test_units_of_sources_with_prefix_names_do_not_collide(tmp_path):
    for name, tars in (("T", ["a-b.tar"]), ("T-a", ["b.tar"])):
        (tmp_path / name).mkdir()
        for t in tars:
            write_tar(tmp_path / name / t, [("k0", jpeg(1), CAPTION)])
    cfg = load_config(None, [f"output={tmp_path / 'out'}",
                             f"sources=[{{name: T, format: rs5m_wds, root: {tmp_path / 'T'}}}, "
                             f"{{name: T-a, format: rs5m_wds, root: {tmp_path / 'T-a'}}}]"])
    units = [u for s in cfg.sources for u in plan_units(s, Storage(), 64)]
    assert len({u.unit_id for u in units}) == 2


def test_exif_orientation_is_applied_and_control_characters_stripped(hostile):
    rows = ingest_all(config(hostile))
    rot = rows["img/rotated.jpg"][0]
    assert rot["reject_reason"] is None and "exif_rotated" in rot["image_note"]
    stored = Image.open(io.BytesIO(rot["rgb_jpeg"]))
    assert stored.size == (48, 64)  # 64x48 stored with orientation 6: upright it is 48 wide
    a = np.asarray(stored.convert("L"), np.float32)
    assert a[:, 24:].mean() < a[:, :24].mean()  # the dark half (top when stored) is on the right once rotated
    bidi = rows["img/bidi.jpg"][0]
    assert bidi["caption"] == "many green trees and a river near some buildings"
    assert bidi["caption_status"] == "original_stripped" and "ok_stripped_control" in bidi["caption_sentence_reasons"]


@pytest.mark.parametrize("what,match", [
    ("empty", "is empty"), ("latin1", "not UTF-8"), ("badjson", "not valid JSON"),
    ("noroot", "does not exist"), ("norecords", "no records"),
])
def test_unreadable_sources_are_clear_errors_before_anything_is_written(tmp_path, what, match, ray_local):
    from fusionrs.build.pipeline import build

    root = tmp_path / "K"
    root.mkdir()
    ann = root / "dataset.json"
    ann.write_bytes({"empty": b"", "latin1": "caf\xe9".encode("latin-1"), "badjson": b"{\"images\": [",
                     "noroot": b"{}", "norecords": b'{"images": []}'}[what])
    cfg = load_config(None, [f"output={tmp_path / 'out'}", "sources=[{name: K, format: karpathy_json, "
                             f"root: {root if what != 'noroot' else tmp_path / 'nope'}, annotations: {ann}}}]"])
    with pytest.raises(SourceError, match=match) as e:
        build(cfg)
    assert "K" in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_output_may_not_overlap_a_source_root(tmp_path, where):
    root = tmp_path / "src"
    out = {"same": root, "inside": root / "build", "contains": tmp_path}[where]
    with pytest.raises(ConfigError, match="output"):
        load_config(None, [f"output={out}", f"sources=[{{name: K, format: rs5m_wds, root: {root}}}]"])


@pytest.mark.slow
def test_hostile_build_finishes_and_sweeps_only_its_own_files(hostile, ray_local):
    """The whole build on the hostile sources: it completes, every record is a triplet or a
    reject with the planted reason, and a stray `*.tmp-*` file in the output survives the sweep."""
    from fusionrs.build.pipeline import build

    out = hostile["tmp"] / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "field-notes.tmp-2024.txt").write_text("mine")
    (out / "_stage").mkdir()
    (out / "_stage" / "x.parquet.tmp-0123").write_text("an interrupted write")
    m = build(config(hostile))
    assert m["status"] == "completed"
    assert (out / "notes" / "field-notes.tmp-2024.txt").read_text() == "mine"
    assert not (out / "_stage" / "x.parquet.tmp-0123").exists()
    got = {}
    for d in ("triplets", "rejects"):
        t = pads.dataset(str(out / d), format="parquet").to_table().to_pylist()
        for r in t:
            got.setdefault(r["source_record_id"], []).append("triplet" if d == "triplets" else r["reason"])
    for rid, outcomes in hostile["expect"].items():
        assert sorted(got.get(rid, [])) == sorted(outcomes), (rid, got.get(rid))


def test_ray_starts_its_own_instance_despite_a_stale_cluster_file(tmp_path):
    """No address configured and no RAY_ADDRESS: a new local instance, never the cluster a stale
    `ray_current_cluster` file names (ray.init's own fallback would hang trying to reach it)."""
    import shutil
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="frs", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # a stale file: nothing listens there
    (tmp_path / "src").mkdir()
    code = ("from fusionrs.config import load_config; from fusionrs.build.pipeline import init_ray; import ray;"
            f"cfg = load_config(None, ['output={tmp_path / 'o'}', 'sources=[{{name: K, format: rs5m_wds, root: {tmp_path / 'src'}}}]',"
            "'ray.num_cpus=1']); init_ray(cfg); print('NODES', len(ray.nodes())); ray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    try:
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert p.returncode == 0 and "NODES 1" in p.stdout, p.stderr[-2000:]


@pytest.mark.slow
def test_rebuild_after_editing_annotations_redoes_only_what_changed(tmp_path, ray_local):
    """Edit one caption, remove one record and add one: the rerun re-ingests and re-translates
    only the units those records sit in, the new caption and record appear, the removed one is
    gone, and the files of the units that no longer exist leave triplets/ (with a changed split
    seed the plan changes but no image is translated again)."""
    from fusionrs.build.pipeline import build

    root = tmp_path / "K"
    (root / "img").mkdir(parents=True)
    images = []
    for i in range(40):
        (root / "img" / f"{i:03d}.jpg").write_bytes(jpeg(1000 + i))
        images.append(img_entry(f"img/{i:03d}.jpg", caption=f"{CAPTION} number {i}"))
    (root / "dataset.json").write_text(karpathy(images))
    out = tmp_path / "out"
    base = [f"output={out}", f"sources=[{{name: K, format: karpathy_json, root: {root}, annotations: dataset.json}}]",
            "ingest.records_per_unit=8", "translate.resolution=64", "translate.min_actors=1", "translate.max_actors=1",
            "split.min_heldout_per_source=0"]
    first = build(load_config(None, base))
    files_before = output_files(out)
    ir_before = {f.name for f in (out / "_stage" / "ir").rglob("*.parquet")}

    images[5]["sentences"][0]["raw"] = "an edited caption of many trees beside a wide river"
    removed = images.pop(20)["filename"]
    (root / "img" / "new.jpg").write_bytes(jpeg(2000))
    images.append(img_entry("img/new.jpg"))
    (root / "dataset.json").write_text(karpathy(images))
    second = build(load_config(None, [*base, "split.seed=7"]))

    touched = second["units"] - second["work"]["ingest_units_skipped"]
    assert 1 <= touched <= 3 < second["units"]  # the edited, the shortened and the extended unit at most
    ir_after = {f.name for f in (out / "_stage" / "ir").rglob("*.parquet")} - ir_before
    assert second["work"]["translate_parts_skipped"] == second["parts"] - len(ir_after) > 0  # unchanged parts reused
    assert len(ir_after) <= 2 * touched  # only the touched units' parts were translated again
    rows = {r["source_record_id"]: r for r in
            pads.dataset(str(out / "triplets"), format="parquet").to_table(columns=["source_record_id", "caption"]).to_pylist()}
    assert rows["img/005.jpg"]["caption"] == "an edited caption of many trees beside a wide river"
    assert removed not in rows and "img/new.jpg" in rows and len(rows) == 40
    files_after = output_files(out)
    assert files_before - files_after  # the touched units' old files are gone
    parts = {p.split("/", 1)[1].removesuffix(".parquet").removesuffix(f"-{split_of_file(p)}") for p in files_after}
    assert len(parts) == second["parts"] and first["units"] >= 4  # one file per current part, nothing stale


def output_files(out: Path) -> set[str]:
    return {f"{d}/{f.name}" for d in ("triplets", "rejects") if (out / d).exists() for f in (out / d).iterdir()}
