"""End-to-end builds on a local Ray instance: planted dirt, reruns, S3 (moto) vs local disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from fusionrs.build.pipeline import build
from fusionrs.core.storage import Storage
from fusionrs.dev.sample import read_manifest
from tests.conftest import sample_config

pytestmark = pytest.mark.slow


def read_dir(path, columns=None):
    files = sorted(Path(path).glob("*.parquet"))
    return pads.dataset([str(f) for f in files], format="parquet").to_table(columns=columns).to_pylist() if files else []


@pytest.fixture(scope="module")
def local_build(ray_local, sample_sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "out"
    cfg = sample_config(sample_sources, f"output={out}")
    manifest = build(cfg)
    return cfg, manifest, out


def test_every_input_is_a_triplet_or_a_reject(local_build, sample_sources):
    cfg, manifest, out = local_build
    expected = {r["sample_id"] for r in read_manifest(sample_sources)["records"]}  # what the generator wrote
    tri = read_dir(out / "triplets", ["sample_id"])
    rej = read_dir(out / "rejects", ["sample_id"])
    ids = [r["sample_id"] for r in tri + rej]
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected
    assert manifest["counts"]["triplets"] == len(tri) and manifest["counts"]["rejects"] == len(rej)


def test_planted_dirt_is_caught_with_the_right_reason(local_build, sample_sources):
    _, _, out = local_build
    planted = read_manifest(sample_sources)["planted"]
    tri = {r["sample_id"]: r for r in read_dir(out / "triplets", ["sample_id", "group_id", "caption_status", "image_note", "split"])}
    rej = {r["sample_id"]: r for r in read_dir(out / "rejects")}
    by_kind = {p["kind"]: p for p in planted}
    assert len(planted) >= 25
    for p in planted:
        sid = p["sample_id"]
        if "reject" in p:
            assert sid in rej, p["kind"]
            assert rej[sid]["reason"] == p["reject"], (p["kind"], rej[sid])
            if "caption_status" in p:
                assert rej[sid]["caption_status"] == p["caption_status"], p["kind"]
            continue
        assert sid in tri, (p["kind"], rej.get(sid))
        if "caption_status" in p:
            assert tri[sid]["caption_status"] == p["caption_status"], p["kind"]
        if "image_note" in p:
            assert p["image_note"] in (tri[sid]["image_note"] or ""), p["kind"]
        if p["same_group"]:
            other = by_kind[p["same_group"]]["sample_id"]
            assert tri[sid]["group_id"] == tri[other]["group_id"], p["kind"]
            assert tri[sid]["split"] == tri[other]["split"]


def test_no_group_crosses_splits_and_stats_match(local_build):
    _, manifest, out = local_build
    tri = read_dir(out / "triplets", ["group_id", "split", "source", "is_eval_representative"])
    splits_of = {}
    for r in tri:
        splits_of.setdefault(r["group_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert any(len([r for r in tri if r["group_id"] == g]) > 1 for g in splits_of)  # groups exist
    assert manifest["counts"]["cross_split_groups_in_output"] == 0
    t2 = manifest["counts"]["table2_composition"]
    assert sum(sum(v.values()) for v in t2.values()) == len(tri)
    held = {g for g, s in splits_of.items() if s & {"val", "test"}}
    assert sum(r["is_eval_representative"] for r in tri) == len(held)
    assert "| Total |" in (out / "stats.md").read_text() and "synthetic" in (out / "README.md").read_text()


def independent_groups(rows: list[dict], radius: int, caption_groups: bool) -> list[set[str]]:
    """Joint groups recomputed here by brute force, from the spec's definition (official §3.2):
    rows are one group when linked by equal RGB or IR SHA-256, RGB or IR pHash64 within `radius`
    bits, or (optionally) an equal normalized caption key. O(n²), no library code."""
    parent = list(range(len(rows)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def linked(a, b) -> bool:
        if a["rgb_sha256"] == b["rgb_sha256"] or a["ir_sha256"] == b["ir_sha256"]:
            return True
        for col in ("rgb_phash", "ir_phash"):
            if bin(int(a[col], 16) ^ int(b[col], 16)).count("1") <= radius:
                return True
        key = a["normalized_caption_key"]
        return caption_groups and key is not None and key == b["normalized_caption_key"]

    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if find(i) != find(j) and linked(rows[i], rows[j]):
                parent[find(i)] = find(j)
    groups: dict[int, set[str]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(find(i), set()).add(r["sample_id"])
    return list(groups.values())


def test_split_checked_against_groups_recomputed_from_the_definition(local_build):
    """Not the library's cross_split_groups: every group recomputed here sits in one split and is
    exactly one of the output's group_ids (same members, same size)."""
    cfg, _, out = local_build
    rows = read_dir(out / "triplets", ["sample_id", "split", "group_id", "group_size", "rgb_sha256", "rgb_phash",
                                       "ir_sha256", "ir_phash", "normalized_caption_key"])
    groups = independent_groups(rows, cfg.dedup.near_radius, cfg.dedup.caption_groups)
    by_id = {r["sample_id"]: r for r in rows}
    assert any(len(g) > 1 for g in groups)  # the sample plants duplicates: there is something to check
    for g in groups:
        assert len({by_id[s]["split"] for s in g}) == 1, sorted(g)
        assert len({by_id[s]["group_id"] for s in g}) == 1, sorted(g)
        assert all(by_id[s]["group_size"] == len(g) for s in g), sorted(g)
    assert len(groups) == len({r["group_id"] for r in rows})


def test_triplet_images_and_captions(local_build):
    import io

    from PIL import Image

    cfg, manifest, out = local_build
    rows = read_dir(out / "triplets")
    for r in rows[:20]:
        ir = Image.open(io.BytesIO(r["ir_jpeg"]))
        assert ir.mode == "RGB" and ir.size == (cfg.translate.resolution,) * 2
        assert Image.open(io.BytesIO(r["rgb_jpeg"])).mode == "RGB"
        assert r["caption"] and r["captions"][0] == r["caption"] or r["caption_status"].startswith("fallback")
    statuses = {r["ir_caption_status"] for r in rows}
    assert "accepted" in statuses and "not_selected" in statuses
    for r in rows:
        assert (r["ir_aware_caption"] is not None) == (r["ir_caption_status"] != "not_selected")
    assert manifest["translator"]["backend"] == "pseudo_ir" and manifest["captioner"]["backend"] == "cues"
    assert manifest["config_fingerprint"] == cfg.fingerprint()
    assert (out / "config.yaml").exists()


def test_output_reads_with_ray_data(local_build):
    import ray

    _, manifest, out = local_build
    ds = ray.data.read_parquet(str(out / "triplets"))
    assert ds.count() == manifest["counts"]["triplets"]
    assert {"sample_id", "split", "rgb_jpeg", "ir_jpeg", "ir_aware_caption"} <= set(ds.schema().names)


def test_rerun_skips_work_and_reproduces_outputs(local_build):
    cfg, first, out = local_build
    names = sorted(os.listdir(out / "triplets"))
    before = {r["sample_id"]: r for r in read_dir(out / "triplets")}
    again = build(cfg)
    after = {r["sample_id"]: r for r in read_dir(out / "triplets")}
    assert again["work"]["ingest_units_skipped"] == again["units"]
    assert again["work"]["translate_parts_skipped"] == again["parts"]
    assert before == after  # bytes of images, captions, splits: all identical
    assert sorted(os.listdir(out / "triplets")) == names  # deterministic names, nothing added


def test_s3_build_equals_local_build(local_build, sample_sources, s3_server, tmp_path):
    import boto3

    _, _, out_local = local_build
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="fusionrs-test")
    for f in sample_sources.rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), "fusionrs-test", "src/" + f.relative_to(sample_sources).as_posix())
    cfg = sample_config("s3://fusionrs-test/src", "output=s3://fusionrs-test/out", f"storage.s3_endpoint={s3_server}")
    manifest = build(cfg)

    storage = Storage(s3_endpoint=s3_server)
    fs, _ = storage.resolve("s3://fusionrs-test/out")
    cols = ["sample_id", "split", "group_id", "caption", "ir_aware_caption", "ir_caption_status"]

    def table(uri, local=None):
        if local:
            return sorted(tuple(r[c] for c in cols) for r in read_dir(local, cols))
        files = [storage.resolve(u)[1] for u in storage.list_files(uri, "*.parquet")]
        return sorted(tuple(r[c] for c in cols) for r in pads.dataset(files, filesystem=fs, format="parquet").to_table(columns=cols).to_pylist())

    assert table("s3://fusionrs-test/out/triplets") == table(None, out_local / "triplets")
    local_manifest = json.loads((out_local / "manifest.json").read_text())
    assert manifest["counts"]["table2_composition"] == local_manifest["counts"]["table2_composition"]
    assert manifest["counts"]["reject_reasons"] == local_manifest["counts"]["reject_reasons"]
    # The S3 secret never reaches any output object.
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    for obj in s3.list_objects_v2(Bucket="fusionrs-test", Prefix="out/")["Contents"]:
        body = s3.get_object(Bucket="fusionrs-test", Key=obj["Key"])["Body"].read()
        assert secret not in body, obj["Key"]
