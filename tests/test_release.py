"""Release files, the verifier, the dataset card with Hugging Face front matter, and takedowns,
on a small real build output written without Ray (tests/release_fixture.py).

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_release.py
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from fusionrs.build.tombstone import TombstoneError, tombstone, tombstoned_ids
from fusionrs.dataset.release import tombstone_manifest_fields, verify, write_release
from fusionrs.dataset.schema import TRIPLET_SCHEMA
from tests.release_fixture import write_build

# The rights codes of the official public index (reference §1.2), typed here independently.
OFFICIAL_RIGHTS = {"RSICD": "rsicd-redistribution-license-not-located", "NWPU": "nwpu-captions-text-unlicensed",
                   "RS5M": "rs5m-item-rights-unconfirmed", "RSITMD": "rsitmd-redistribution-license-not-located"}
SKYSCRIPT_RIGHTS = {"US": "skyscript-naip-public-domain", "DE": "skyscript-brandenburg-dl-de-by-2.0"}


@pytest.fixture
def build(tmp_path):
    return write_build(tmp_path)


@pytest.fixture
def released(build):
    write_release(str(build.out))
    return build


def files_under(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def rows_by_file(out: Path) -> dict[str, list[dict]]:
    return {p.relative_to(out).as_posix(): pq.read_table(p).to_pylist()
            for p in sorted((out / "triplets").glob("*.parquet"))}


def codes(problems) -> set[tuple[str, str]]:
    return {(p.code, p.file) for p in problems}


# ---------------------------------------------------------------------------------------
# Hugging Face.


def test_load_dataset_gives_three_splits_with_pil_images(released, tmp_path):
    import datasets  # test dependency

    out = released.out
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(ds) == ["test", "train", "val"]
    want = {s: sorted(r["sample_id"] for r in released.rows if r["split"] == s) for s in ("train", "val", "test")}
    assert {s: sorted(ds[s]["sample_id"]) for s in ds} == want
    by_id = {r["sample_id"]: r for r in released.rows}
    # Every column with the type `datasets` itself gives our Arrow schema, the JPEG columns as images.
    expected = datasets.Features.from_arrow_schema(TRIPLET_SCHEMA)
    expected["rgb_jpeg"], expected["ir_jpeg"] = datasets.Image(), datasets.Image()
    for split in ds:
        assert ds[split].features == expected
        for row in ds[split]:
            for col in ("rgb_jpeg", "ir_jpeg"):
                assert isinstance(row[col], Image.Image)
                reference = np.asarray(Image.open(io.BytesIO(by_id[row["sample_id"]][col])).convert("RGB"))
                assert np.array_equal(np.asarray(row[col].convert("RGB")), reference)
            assert row["split"] == split and row["captions"] == by_id[row["sample_id"]]["captions"]
    # The IR-aware config: only rows whose caption was accepted, in their splits.
    ira = datasets.load_dataset(str(out), "iraware", cache_dir=str(tmp_path / "hf-cache"))
    accepted = {s: sorted(r["sample_id"] for r in released.rows if r["split"] == s and r["ir_caption_status"] == "accepted")
                for s in ("train", "val", "test")}
    assert {s: sorted(ira[s]["sample_id"]) for s in ira} == {s: v for s, v in accepted.items() if v}
    # Loading wrote nothing into the release.
    assert verify(str(out)) == []


def test_build_reports_write_the_card(build):
    """The build's write_reports writes the card (front matter and grid) before any release."""
    meta = yaml.safe_load((build.out / "README.md").read_text().split("---\n")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["default", "iraware"]
    assert (build.out / "assets" / "grid.png").read_bytes().startswith(b"\x89PNG")


def test_card_front_matter_and_text(released):
    text = (released.out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "other" and meta["license_link"] == "licenses/sources.json"
    assert meta["size_categories"] == ["n<1K"]
    default = next(c for c in meta["configs"] if c["config_name"] == "default")
    assert default["data_files"] == [{"split": s, "path": f"triplets/*-{s}.parquet"} for s in ("train", "val", "test")]
    features = {f["name"]: f for f in meta["dataset_info"][0]["features"]}
    assert features["rgb_jpeg"]["dtype"] == features["ir_jpeg"]["dtype"] == "image"
    assert list(features) == pq.read_schema(next((released.out / "triplets").glob("*.parquet"))).names
    # What the card said before it had front matter, and the disclosures it must keep.
    for phrase in ("**The infrared modality is synthetic.**",
                   "Sources: RSICD (karpathy_json), SkyScript (skyscript_csv), NWPU (nwpu)",
                   "pHash64 Hamming <= 4", "seed 0; zero groups cross splits", "arXiv:2606.17020", "# Build statistics",
                   "`rsicd-redistribution-license-not-located` (8)"):
        assert phrase in text, phrase
    # The grid: one row per source, two RGB | IR pairs; the shown rows are the smallest sample_ids.
    grid = Image.open(released.out / "assets" / "grid.png")
    assert grid.size == (2 * (2 * 96 + 4) + 4, 3 * (96 + 4) + 4)
    for src in ("RSICD", "SkyScript", "NWPU"):
        smallest = sorted(r["sample_id"] for r in released.rows if r["source"] == src)[:2]
        assert all(f"`{s}`" in text for s in smallest)


# ---------------------------------------------------------------------------------------
# Release files.


def test_release_files_check_with_sha256sum_and_hashlib(released):
    out = released.out
    sums = (out / "SHA256SUMS").read_text().splitlines()
    assert all(re.fullmatch(r"[0-9a-f]{64}  \S+", line) for line in sums)
    assert sums[-1].endswith("  RELEASE_MANIFEST.json")
    # coreutils' own check of the two-space format, every file, the manifest included.
    res = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = json.loads((out / "RELEASE_MANIFEST.json").read_text())
    expected = {rel: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for rel, b in files_under(out).items()
                if not rel.startswith(("_stage/", "ledger/")) and rel not in ("SHA256SUMS", "RELEASE_MANIFEST.json")}
    assert {rel: {k: e[k] for k in ("bytes", "sha256")} for rel, e in manifest["files"].items()} == expected
    assert manifest["files"]["triplets/RSICD-00000-train.parquet"]["rows"] == 4
    for name in ("croissant.json", "DATASHEET.md", "licenses/sources.json", "assets/grid.png"):
        assert name in manifest["files"]
    datasheet = (out / "DATASHEET.md").read_text()
    for section in ("## Motivation", "## Composition", "## Collection process", "## Preprocessing, cleaning, labelling",
                    "## Uses", "## Distribution", "## Maintenance"):
        assert section in datasheet
    assert verify(str(out)) == []


def test_release_redacts_machine_paths_and_keeps_the_rest(build):
    out, machine = build.out, str(build.src_root.parent)
    before = yaml.safe_load((out / "config.yaml").read_text())
    assert machine in (out / "config.yaml").read_text() and machine in (out / "manifest.json").read_text()
    write_release(str(out))
    after = yaml.safe_load((out / "config.yaml").read_text())
    for rel, data in files_under(out).items():
        if not rel.startswith(("_stage/", "ledger/")):
            assert machine.encode() not in data, rel
    assert after["output"] == "<output>"
    assert [(s["name"], s["root"], s["annotations"]) for s in after["sources"]] == [
        ("RSICD", "<source:RSICD>", "<source:RSICD>/dataset.json"),
        ("SkyScript", "<source:SkyScript>", "<source:SkyScript>/skyscript.csv"),
        ("NWPU", "<source:NWPU>", "<source:NWPU>/dataset_nwpu.json")]
    for s_before, s_after in zip(before["sources"], after["sources"]):
        assert {k: v for k, v in s_before.items() if k not in ("root", "annotations")} == \
               {k: v for k, v in s_after.items() if k not in ("root", "annotations")}
    assert {k: v for k, v in before.items() if k not in ("output", "sources")} == \
           {k: v for k, v in after.items() if k not in ("output", "sources")}
    assert json.loads((out / "manifest.json").read_text())["source_roots"]["RSICD"] == "<source:RSICD>"
    detail = pq.read_table(out / "rejects" / "RSICD-00000.parquet").column("detail")[0].as_py()
    assert detail == "cannot identify image file <source:RSICD>/broken.jpg"
    # Triplets are never rewritten by a release.
    assert rows_by_file(out) == {rel: [r for r in build.rows if r["sample_id"] in ids] for rel, ids in build.files.items()}


def test_release_twice_writes_the_same_bytes(released):
    first = files_under(released.out)
    write_release(str(released.out))
    assert files_under(released.out) == first


def test_croissant_validates_with_mlcroissant(released):
    import mlcroissant as mlc  # test dependency; reads the local Parquet files, no network

    ds = mlc.Dataset(jsonld=str(released.out / "croissant.json"))
    assert not ds.metadata.issues.errors and not ds.metadata.issues.warnings, ds.metadata.issues.report()
    records = list(ds.records("triplets"))
    got = sorted(r["triplets/sample_id"].decode() for r in records)
    assert got == sorted(r["sample_id"] for r in released.rows)
    assert all(isinstance(r["triplets/ir_jpeg"], Image.Image) for r in records)
    assert len(list(ds.records("rejects"))) == len(released.rejects)


# ---------------------------------------------------------------------------------------
# The verifier on planted problems.


def _rewrite(path: Path, change) -> None:
    table = pq.read_table(path)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def plant_changed_byte(b):
    """One byte inside a stored JPEG (an uncompressed column): the file still reads."""
    p = b.out / "triplets" / "NWPU-00000-val.parquet"
    data = bytearray(p.read_bytes())
    jpeg = pq.read_table(p).column("rgb_jpeg")[0].as_py()
    at = data.find(jpeg[200:240]) + 10
    data[at] ^= 0xFF
    p.write_bytes(bytes(data))
    return {("sha256_mismatch", "triplets/NWPU-00000-val.parquet")}, False


def plant_truncated_file(b):
    p = b.out / "rejects" / "NWPU-00000.parquet"
    p.write_bytes(p.read_bytes()[:-100])
    rel = "rejects/NWPU-00000.parquet"
    return {("sha256_mismatch", rel), ("size_mismatch", rel), ("unreadable_parquet", rel),
            ("row_count_mismatch", "manifest.json")}, False


def plant_machine_path_in_config(b):
    p = b.out / "config.yaml"
    p.write_text(p.read_text().replace("<output>", "/home/alice/fusionrs/out"))
    return {("machine_path", "config.yaml"), ("sha256_mismatch", "config.yaml"), ("size_mismatch", "config.yaml")}, False


def plant_cross_split_group(b):
    train = pq.read_table(b.out / "triplets" / "RSICD-00000-train.parquet").column("group_id")[0].as_py()

    def change(rows):
        rows[0]["group_id"] = train
    _rewrite(b.out / "triplets" / "RSICD-00000-test.parquet", change)
    return {("cross_split_group", "triplets/RSICD-00000-test.parquet")}, True


def plant_caption_key_in_two_splits(b):
    key = pq.read_table(b.out / "triplets" / "SkyScript-00000-train.parquet").column("normalized_caption_key")[0].as_py()

    def change(rows):
        rows[1]["normalized_caption_key"] = key
    _rewrite(b.out / "triplets" / "SkyScript-00000-val.parquet", change)
    return {("caption_key_across_splits", "triplets/SkyScript-00000-train.parquet")}, True


def plant_row_in_wrong_split_file(b):
    def change(rows):
        rows[0]["split"] = "test"
    _rewrite(b.out / "triplets" / "NWPU-00000-val.parquet", change)
    return {("split_file_mismatch", "triplets/NWPU-00000-val.parquet"),
            ("row_count_mismatch", "manifest.json")}, True


def plant_absolute_locator(b):
    def change(rows):
        rows[0]["source_locator"] = "/srv/images/x.jpg"
    _rewrite(b.out / "triplets" / "RSICD-00000-val.parquet", change)
    rel = "triplets/RSICD-00000-val.parquet"
    return {("absolute_locator", rel), ("machine_path", rel)}, True


def plant_unlisted_file(b):
    (b.out / "notes.txt").write_text("left behind\n")
    return {("unlisted_file", "notes.txt")}, False


@pytest.mark.parametrize("plant", [plant_changed_byte, plant_truncated_file, plant_machine_path_in_config,
                                   plant_cross_split_group, plant_caption_key_in_two_splits,
                                   plant_row_in_wrong_split_file, plant_absolute_locator, plant_unlisted_file])
def test_verify_names_each_planted_problem(released, plant):
    """`rerelease`: the problem is in the data itself, so it survives a new release (which makes
    the checksums right again) and must be the only thing the verifier reports."""
    expected, rerelease = plant(released)
    if rerelease:
        write_release(str(released.out))
    assert codes(verify(str(released.out))) == expected


def test_unknown_rights_fail_verify_until_given(tmp_path):
    b = write_build(tmp_path, sources=(("RSICD", "karpathy_json"), ("UCM", "karpathy_json"), ("SkyScript", "skyscript_csv")))
    summary = write_release(str(b.out))
    assert summary["unreviewed_rights"] == ["UCM"]
    assert codes(verify(str(b.out))) == {("rights_unknown", "licenses/sources.json")}
    rights = json.loads((b.out / "licenses" / "sources.json").read_text())["sources"]
    assert rights["RSICD"]["rights_codes"] == {OFFICIAL_RIGHTS["RSICD"]: 8}
    assert rights["SkyScript"]["rights_codes"] == {SKYSCRIPT_RIGHTS["US"]: 6, SKYSCRIPT_RIGHTS["DE"]: 2}
    assert rights["SkyScript"]["subsources"] == {"US": 6, "DE": 2}
    write_release(str(b.out), rights={"UCM": "ucm-captions-cite-only"})
    assert verify(str(b.out)) == []
    write_release(str(b.out))  # a later release keeps the code given once
    assert verify(str(b.out)) == []
    assert "`ucm-captions-cite-only` (8)" in (b.out / "README.md").read_text()


# ---------------------------------------------------------------------------------------
# Takedowns.


def test_tombstone_of_one_group_member_removes_it_and_bumps_major(released):
    out = released.out
    before = rows_by_file(out)
    group = [r for r in released.rows if r["source"] == "NWPU" and r["group_size"] == 2]
    victim = group[0]["sample_id"]
    res = tombstone(str(out), [victim], "rights holder request", date="2026-12-01")
    assert res["removed"] == 1 and res["membership_changed"] and res["dataset_version"] == "2.0.0"
    after = rows_by_file(out)
    assert after == {rel: [r for r in rows if r["sample_id"] != victim] for rel, rows in before.items()}
    assert tombstoned_ids(str(out)) == {victim}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset_version"] == "2.0.0" and manifest["counts"]["triplets"] == len(released.rows) - 1
    assert [(t["sample_id"], t["date"], t["reason"], t["split"]) for t in manifest["tombstones"]] == [
        (victim, "2026-12-01", "rights holder request", "train")]
    assert json.loads((out / "tombstones.json").read_text())["tombstones"] == manifest["tombstones"]
    # What a rebuild into this output carries into its manifest.
    assert tombstone_manifest_fields(str(out)) == {k: manifest[k] for k in ("dataset_version", "tombstones", "changelog")}
    assert "| 2.0.0 | 2026-12-01 |" in (out / "README.md").read_text()
    assert verify(str(out)) == []


def test_tombstone_whole_group_bumps_minor_and_updates_the_grid(released, tmp_path):
    import datasets  # test dependency

    out = released.out
    before, grid_before = rows_by_file(out), (out / "assets" / "grid.png").read_bytes()
    shown = sorted(r["sample_id"] for r in released.rows if r["source"] == "RSICD")[0]  # first in the grid
    pair = next(r for r in released.rows if r["source"] == "SkyScript" and r["group_size"] == 2)  # a 2-member group
    groups = {r["group_id"] for r in released.rows if r["sample_id"] in (shown, pair["sample_id"])}
    members = {r["sample_id"] for r in released.rows if r["group_id"] in groups}
    assert len(members) == 2 + (1 if next(r for r in released.rows if r["sample_id"] == shown)["group_size"] == 1 else 2)
    res = tombstone(str(out), [shown, pair["sample_id"]], "privacy", whole_groups=True, date="2026-12-02")
    assert res["removed"] == len(members) and not res["membership_changed"] and res["dataset_version"] == "1.1.0"
    assert {t["sample_id"]: t["requested"] for t in json.loads((out / "tombstones.json").read_text())["tombstones"]} == \
        {m: m in (shown, pair["sample_id"]) for m in members}
    assert rows_by_file(out) == {rel: [r for r in rows if r["sample_id"] not in members] for rel, rows in before.items()}
    assert tombstoned_ids(str(out)) == members
    assert f"`{shown}`" not in (out / "README.md").read_text()
    assert (out / "assets" / "grid.png").read_bytes() != grid_before
    assert verify(str(out)) == []
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert {sid for split in ds for sid in ds[split]["sample_id"]} == {r["sample_id"] for r in released.rows} - members
    # Again with the same id: nothing new, same version, and the takedown stays complete.
    again = tombstone(str(out), [shown], "privacy", date="2026-12-03")
    assert again["removed"] == 0 and again["already_tombstoned"] == [shown] and again["dataset_version"] == "1.1.0"
    assert tombstoned_ids(str(out)) == members


def test_tombstone_rejects_bad_requests(released):
    out = str(released.out)
    sid = released.rows[0]["sample_id"]
    for args, code in ((([], "x"), "no_sample_ids"), ((["RSICD-0000000000000000"], "x"), "unknown_sample_id"),
                       (([sid], " "), "empty_reason"), (([sid], "see /home/bob/mail.txt"), "bad_reason")):
        with pytest.raises(TombstoneError) as e:
            tombstone(out, *args)
        assert e.value.code == code
    assert tombstoned_ids(out) == set() and tombstone_manifest_fields(out) == {} and verify(out) == []


def test_tombstone_from_the_command_line_removes_the_report_too(released, capsys):
    """`fusionrs tombstone OUT --sample-id ID --reason TEXT`; an HTML report in the output (it
    shows rows' pictures) is deleted, and it is never a released file."""
    from fusionrs.cli import main

    out = released.out
    (out / "report.html").write_text("<html>a picture of every row</html>")
    assert verify(str(out)) == []  # not released: not an unlisted file either
    sid = sorted(r["sample_id"] for r in released.rows)[0]
    assert main(["tombstone", str(out), "--reason", "rights holder request", "--sample-id", sid,
                 "--date", "2026-12-04"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 1
    assert sid in tombstoned_ids(str(out)) and not (out / "report.html").exists()
    assert main(["tombstone", str(out), "--reason", "x"]) == 2 and "at least one sample_id" in capsys.readouterr().err


def test_tombstone_finishes_an_interrupted_takedown(released):
    """tombstones.json is written first: a takedown that died before rewriting the files is
    completed by running it again."""
    out = released.out
    victim = released.rows[5]["sample_id"]
    (out / "tombstones.json").write_text(json.dumps({
        "format": "fusionrs-tombstones-v1", "dataset_version": "1.1.0", "changelog": [],
        "tombstones": [{"sample_id": victim, "source": "RSICD", "split": "val", "group_id": None, "date": "2026-12-01",
                        "reason": "privacy", "version": "1.1.0", "requested": True}]}))
    assert ("tombstoned_row_present", "tombstones.json") in codes(verify(str(out)))
    res = tombstone(str(out), [victim], "privacy")
    assert res["removed"] == 1 and res["already_tombstoned"] == [victim] and res["dataset_version"] == "1.1.0"
    assert victim not in {r["sample_id"] for rows in rows_by_file(out).values() for r in rows}
    assert verify(str(out)) == []


@pytest.mark.slow
def test_demo_build_releases_verifies_loads_and_keeps_takedowns_out_of_rebuilds(demo_build, ray_local, tmp_path):
    """The real demo build: release files, a clean verify, `datasets.load_dataset(OUT)` with three
    splits of images; a takedown removes its row, and a rebuild into the output keeps it out."""
    import shutil

    import datasets

    from fusionrs.build.pipeline import build
    from fusionrs.build.tombstone import tombstone
    from fusionrs.config import load_config
    from fusionrs.dataset.release import verify, write_release

    out = tmp_path / "demo"
    shutil.copytree(demo_build, out)  # the session's demo build stays as it is for other tests
    write_release(str(out))
    assert verify(str(out)) == []
    dd = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert set(dd) == {"train", "val", "test"} and all(len(dd[s]) > 0 for s in dd)
    assert dd["test"].features["ir_jpeg"].__class__.__name__ == "Image" and dd["test"][0]["ir_jpeg"].mode == "RGB"

    victim = dd["train"][0]["sample_id"]
    before = len(dd["train"])
    info = tombstone(str(out), [victim], "test takedown")
    assert info["removed"] >= 1
    # The demo build's own resolved config (the copy's was redacted by the release), into the copy.
    m = build(load_config(demo_build / "config.yaml", [f"output={out}"]))
    assert m["dataset_version"] != "1.0.0" and any(t["sample_id"] == victim for t in m["tombstones"])
    write_release(str(out))
    assert verify(str(out)) == []
    again = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf2"))
    assert victim not in set(again["train"]["sample_id"]) and len(again["train"]) == before - info["removed"]
