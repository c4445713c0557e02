"""HIT-UAV readers, VQA builder and scorer, on the real sample (tests/conftest.py `shared_data`)
and on hand-made rows. Expected values are derived in this file from the XML/JSON read here with
ElementTree/json, or by hand (the arithmetic is in the comments), never from the library."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import statistics
import xml.etree.ElementTree as ET

import pytest

from fusionrs.eval.hit_uav import (
    Box,
    HitUavFormatError,
    HitUavImage,
    build_hit_uav_vqa,
    parse_answer,
    read_coco,
    read_hit_uav,
    read_voc,
    region_name,
    score_hit_uav,
    write_hit_uav_vqa,
)

NAME = {"Person": "person", "Car": "car", "Bicycle": "bicycle", "OtherVehicle": "other vehicle"}
SORTED_CLASSES = ["bicycle", "car", "other vehicle", "person"]


@pytest.fixture(scope="module")
def sample(shared_data):
    return shared_data / "hit-uav-sample"


def xml_boxes(path):
    """(class, x, y, w, h) of one VOC file, DontCare left out — read here, independently."""
    root = ET.parse(path).getroot()
    out = []
    for obj in root.findall("object"):
        name = obj.find("name").text
        if name == "DontCare":
            continue
        b = {k: float(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")}
        out.append((NAME[name], b["xmin"], b["ymin"], b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]))
    return out


def json_ids(sample):
    doc = json.loads((sample / "test.json").read_text())
    return {img["filename"]: img["id"] for img in doc["images"]}


# -- readers ----------------------------------------------------------------------------------
def test_voc_and_json_layouts_give_the_same_records(sample):
    voc, coco = read_voc(str(sample)), read_coco(str(sample / "test.json"))
    assert len(voc) == len(coco) == 20
    by_name = {r.file_name: r for r in coco}
    for v in voc:
        c = by_name[v.file_name]
        assert (v.width, v.height, v.boxes) == (c.width, c.height, c.boxes) == (640, 512, v.boxes)
    # The ids differ by design: the JSON's numeric id, the file stem where the XML carries none.
    ids = json_ids(sample)
    assert {r.file_name: r.image_id for r in coco} == ids
    assert all(r.image_id == r.file_name[:-4] for r in voc)
    # Both directories present: the JSON (official ids) wins.
    assert read_hit_uav(str(sample)) == coco


def test_boxes_match_the_xml_read_here(sample):
    records = {r.file_name: r for r in read_voc(str(sample))}
    dropped = 0
    for xml in sorted((sample / "Annotations").glob("*.xml")):
        want = xml_boxes(xml)
        rec = records[xml.stem + ".jpg"]
        assert [tuple(b) for b in rec.boxes] == want
        dropped += sum(o.find("name").text == "DontCare" for o in ET.parse(xml).getroot().findall("object"))
    assert dropped == 6  # 1 + 2 + 3 DontCare boxes in three images, none kept


def test_coco_spelling_of_the_keys_reads_the_same(sample, tmp_path):
    doc = json.loads((sample / "test.json").read_text())
    doc["annotations"] = doc.pop("annotation")
    for img in doc["images"]:
        img["file_name"] = img.pop("filename")
    (tmp_path / "test.json").write_text(json.dumps(doc))
    assert read_coco(str(tmp_path / "test.json")) == read_coco(str(sample / "test.json"))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["annotation"][3].pop("bbox"), r"annotation\[3\] \(id \d+\): bbox must be"),
    (lambda d: d["annotation"][0].update(image_id=99999), r"annotation\[0\].*image_id 99999 is not in 'images'"),
    (lambda d: d["annotation"][1].update(bbox=[1, 2, -3, 4]), r"annotation\[1\].*negative box size"),
    (lambda d: d["categories"][1].update(name="Truck"), r"categories\[1\]: unknown class 'Truck'"),
    (lambda d: d["images"][2].update(filename="../secret.jpg"), r"images\[2\] file name: file name must be a bare file name"),
    (lambda d: d["images"][4].update(width=0), r"images\[4\] width: image size must be a positive integer"),
    (lambda d: d["images"][5].update(id=d["images"][6]["id"]), r"images\[6\]: duplicate image id"),
])
def test_malformed_json_entries_are_named(sample, tmp_path, mutate, message):
    doc = json.loads((sample / "test.json").read_text())
    mutate(doc)
    (tmp_path / "test.json").write_text(json.dumps(doc))
    with pytest.raises(HitUavFormatError, match=message):
        read_coco(str(tmp_path / "test.json"))


def test_malformed_xml_is_named(sample, tmp_path):
    ann = tmp_path / "Annotations"
    shutil.copytree(sample / "Annotations", ann)
    bad = ann / "0_60_30_0_01614.xml"
    bad.write_text(bad.read_text().replace("<name>Person</name>", "<name>Tank</name>", 1))
    with pytest.raises(HitUavFormatError, match=r"0_60_30_0_01614\.xml <object> #0: unknown class 'Tank'"):
        read_voc(str(tmp_path))
    bad.write_text("<annotation><filename>x.jpg</filename>")
    with pytest.raises(HitUavFormatError, match=r"0_60_30_0_01614\.xml: not well-formed XML"):
        read_voc(str(tmp_path))
    bad.write_text("<annotation><filename>x.jpg</filename><size><width>640</width></size></annotation>")
    with pytest.raises(HitUavFormatError, match=r"0_60_30_0_01614\.xml: missing <size/height>"):
        read_voc(str(tmp_path))


# -- the VQA builder -----------------------------------------------------------------------------
def by_image(rows):
    out = {}
    for r in rows:
        if r["question_type"] != "object_presence":
            out.setdefault(r["image_id"], []).append((r["question_type"], r["object_class"], r["answer"]))
    return out


def test_questions_derived_by_hand(sample):
    rows = build_hit_uav_vqa(read_coco(str(sample / "test.json")))
    got = by_image(rows)
    # 2580 = 1_90_80_0_08974, three OtherVehicle boxes; centres x 202, 151.5, 130 → mean 161.2
    # < 640/3 = 213.3 (left); y 194.5, 223, 455.5 → mean 291 in [170.7, 341.3] (middle) → "left".
    assert got[2580] == [("object_count", "other vehicle", "3"), ("group_location", "other vehicle", "left"),
                         ("dominant_object_class", None, "other vehicle")]
    # 2627 = 1_80_90_0_08794, two cars: x 470, 597.5 → 533.75 > 426.7 (right); y 92.5, 200 → 146.25
    # < 170.7 (upper) → "upper-right".
    assert got[2627] == [("object_count", "car", "2"), ("group_location", "car", "upper-right"),
                         ("dominant_object_class", None, "car")]
    # 2756 = 1_100_40_0_02368: 1 bicycle at (395, 367) → center/lower → "lower"; 6 cars, mean
    # (46.75, 26.33) → "upper-left"; 11 persons, mean (249.2, 118.0) → "upper"; person dominates.
    assert got[2756] == [("object_count", "bicycle", "1"), ("group_location", "bicycle", "lower"),
                         ("object_count", "car", "6"), ("group_location", "car", "upper-left"),
                         ("object_count", "person", "11"), ("group_location", "person", "upper"),
                         ("dominant_object_class", None, "person")]
    # 2630 = 0_110_90_0_03806, three persons: mean (368.3, 186.3) → center/middle → "center".
    assert got[2630] == [("object_count", "person", "3"), ("group_location", "person", "center"),
                         ("dominant_object_class", None, "person")]
    # The official manifest (benchmark/manifests/hit_uav_vqa_eval_manifest.jsonl) for image 2333:
    # HITVQA-01247 "9", HITVQA-01248 "upper", HITVQA-01249 "person".
    assert got[2333] == [("object_count", "person", "9"), ("group_location", "person", "upper"),
                         ("dominant_object_class", None, "person")]


def test_every_row_matches_an_independent_derivation(sample):
    """Presence: balanced per class in sha256 order; then per image (id order) count, location per
    present class, dominant class — all computed here from the XML and the JSON ids."""
    ids = json_ids(sample)
    images = {ids[x.stem + ".jpg"]: (x.stem + ".jpg", xml_boxes(x)) for x in (sample / "Annotations").glob("*.xml")}
    seed = 20260726

    def key(v):
        return hashlib.sha256(f"{seed}:{v}".encode()).hexdigest()

    want = []
    for cls in SORTED_CLASSES:
        pos = sorted((i for i in images if any(b[0] == cls for b in images[i][1])),
                     key=lambda i: key(f"presence-positive:{cls}:{i}"))
        neg = sorted((i for i in images if not any(b[0] == cls for b in images[i][1])),
                     key=lambda i: key(f"presence:{cls}:{i}"))
        k = min(len(pos), len(neg))
        want += [(i, "object_presence", cls, "yes") for i in pos[:k]] + [(i, "object_presence", cls, "no") for i in neg[:k]]
    for i in sorted(images):
        boxes = images[i][1]
        counts = {c: sum(b[0] == c for b in boxes) for c in SORTED_CLASSES if any(b[0] == c for b in boxes)}
        for c, n in counts.items():
            mx = statistics.fmean(b[1] + b[3] / 2 for b in boxes if b[0] == c)
            my = statistics.fmean(b[2] + b[4] / 2 for b in boxes if b[0] == c)
            h = "left" if mx < 640 / 3 else "right" if mx > 1280 / 3 else "center"
            v = "upper" if my < 512 / 3 else "lower" if my > 1024 / 3 else "middle"
            region = h if v == "middle" else v if h == "center" else f"{v}-{h}"
            want += [(i, "object_count", c, str(n)), (i, "group_location", c, region)]
        top = [c for c, n in counts.items() if n == max(counts.values())]
        if len(top) == 1:
            want.append((i, "dominant_object_class", None, top[0]))
    rows = build_hit_uav_vqa(read_coco(str(sample / "test.json")))
    assert [(r["image_id"], r["question_type"], r["object_class"], r["answer"]) for r in rows] == want
    assert [r["question_id"] for r in rows] == [f"HITVQA-{n:05d}" for n in range(1, len(want) + 1)]
    # 3 + 9 + 1 + 9 yes = as many no; 24 (image, class) pairs; 20 images, no tie.
    assert len(want) == 2 * 22 + 2 * 24 + 20


def test_row_fields_are_the_official_ones(sample):
    rows = build_hit_uav_vqa(read_coco(str(sample / "test.json")))
    r = next(r for r in rows if r["image_id"] == 2627 and r["question_type"] == "group_location")
    assert r == {
        "question_id": r["question_id"], "image_id": 2627, "image_locator": "test/1_80_90_0_08794.jpg",
        "question_type": "group_location", "question": "In which image region is the center of the car group located?",
        "answer": "upper-right", "answer_type": "region", "object_class": "car",
        "label_source": "official_bbox_annotation", "benchmark_id": "HIT-UAV:2627", "dataset": "HIT-UAV",
        "ir_image": "test/1_80_90_0_08794.jpg", "canonical_answer": "upper-right",
        "accepted_answers": ["upper-right", "upper right", "top-right", "top right"],
        "prompt": "Use only the visible content of this real sensor-captured thermal aerial image. In which image "
                  "region is the center of the car group located? Answer with exactly one region label from: "
                  "upper-left, upper, upper-right, left, center, right, lower-left, lower, lower-right.",
        "max_new_tokens": 12}
    suffix = {"object_presence": "Answer with exactly yes or no.",
              "object_count": "Answer with exactly one non-negative integer.",
              "dominant_object_class": "Answer with exactly one class label from: person, car, bicycle, other vehicle, none."}
    for r in rows:
        if r["question_type"] in suffix:
            assert r["prompt"].endswith(f"{r['question']} {suffix[r['question_type']]}")
        want_type = {"object_presence": "yes_no", "object_count": "integer", "group_location": "region",
                     "dominant_object_class": "class_name"}[r["question_type"]]
        assert r["answer_type"] == want_type
    words = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
             "sixteen seventeen eighteen nineteen twenty").split()
    counts = [r for r in rows if r["question_type"] == "object_count"]
    for r in counts:  # number words up to twenty only
        n = int(r["answer"])
        assert r["accepted_answers"] == ([r["answer"], words[n]] if n <= 20 else [r["answer"]])
    assert {r["answer"] for r in counts} >= {"20", "25"}  # both sides of the limit occur in the sample
    presence = next(r for r in rows if r["object_class"] == "other vehicle" and r["question_type"] == "object_presence")
    assert presence["question"] == "Is a other vehicle visible in this thermal image?"  # the official wording
    assert presence["accepted_answers"] == [presence["answer"]]


def test_ties_skip_dominant_and_no_boxes_answer_none():
    imgs = [HitUavImage(1, "a.jpg", 300, 300, (Box("car", 0, 0, 10, 10), Box("person", 0, 0, 2, 2),
                                                 Box("person", 10, 10, 2, 2), Box("car", 50, 50, 10, 10))),
            HitUavImage(2, "b.jpg", 300, 300, ())]
    rows = build_hit_uav_vqa(imgs)
    assert [(r["image_id"], r["question_type"], r["answer"]) for r in rows
            if r["question_type"] != "object_presence"] == [
        (1, "object_count", "2"), (1, "group_location", "upper-left"),  # cars (5,5),(55,55) → (30,30)
        (1, "object_count", "2"), (1, "group_location", "upper-left"),  # persons (1,1),(11,11) → (6,6)
        (2, "dominant_object_class", "none")]  # image 1: 2 cars vs 2 persons, a tie: no question
    # Car and person: one positive, one negative each; bicycle and other vehicle have no positive.
    assert sorted((r["object_class"], r["image_id"], r["answer"]) for r in rows if r["question_type"] == "object_presence") == [
        ("car", 1, "yes"), ("car", 2, "no"), ("person", 1, "yes"), ("person", 2, "no")]


def test_region_thirds_are_strict():
    assert region_name(100, 100, 300, 300) == "center"  # exactly on the first third lines: middle band
    assert region_name(99.9, 100, 300, 300) == "left"
    assert region_name(200.1, 200.1, 300, 300) == "lower-right"
    assert region_name(150, 99, 300, 300) == "upper"
    assert region_name(201, 150, 300, 300) == "right"


def test_write_checks_images_and_writes_manifest(sample, tmp_path):
    out = tmp_path / "out" / "hit.jsonl"
    summary = write_hit_uav_vqa(str(sample), str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == summary["questions"] == 112
    assert summary["question_type_counts"] == {"dominant_object_class": 20, "group_location": 24,
                                               "object_count": 24, "object_presence": 44}
    assert summary["presence_answer_counts"] == {"no": 22, "yes": 22} and summary["layout"] == "coco"
    assert json.loads((tmp_path / "out" / "hit.jsonl.summary.json").read_text())["questions"] == 112
    # A seed changes the presence selection, never the per-image questions.
    other = build_hit_uav_vqa(read_coco(str(sample / "test.json")), seed=1)
    assert by_image(other) == by_image(lines)
    assert [r["image_id"] for r in other if r["question_type"] == "object_presence"] != \
           [r["image_id"] for r in lines if r["question_type"] == "object_presence"]

    root = tmp_path / "partial"
    shutil.copytree(sample, root)
    (root / "images" / "1_80_90_0_08794.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 HIT-UAV images missing.*1_80_90_0_08794\.jpg"):
        write_hit_uav_vqa(str(root), str(tmp_path / "x.jsonl"))


def test_voc_layout_reads_the_listed_test_images(sample, tmp_path):
    root = tmp_path / "normal_xml"
    shutil.copytree(sample / "Annotations", root / "Annotations")
    shutil.copytree(sample / "images", root / "JPEGImages")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    listed = ["1_90_80_0_08974", "0_110_90_0_03806", "1_80_90_0_08794"]
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(listed) + "\n")
    summary = write_hit_uav_vqa(str(root), str(tmp_path / "voc.jsonl"))
    assert summary["layout"] == "voc" and summary["images"] == 3 and summary["image_dir"] == str(root / "JPEGImages")
    rows = [json.loads(line) for line in (tmp_path / "voc.jsonl").read_text().splitlines()]
    assert {r["image_id"] for r in rows} == set(listed)  # VOC ids: the file stems
    assert by_image(rows)["1_80_90_0_08794"] == [("object_count", "car", "2"), ("group_location", "car", "upper-right"),
                                                 ("dominant_object_class", None, "car")]
    (root / "ImageSets" / "Main" / "test.txt").write_text("1_90_80_0_08974\nnot_there\n")
    with pytest.raises(HitUavFormatError, match=r"test\.txt: 1 listed images have no XML, e\.g\. \['not_there'\]"):
        read_hit_uav(str(root))


# -- scoring -----------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype, answer, parsed", [
    ("object_presence", "Yes.", "yes"),
    ("object_presence", "No, there is none", "no"),
    ("object_presence", "I see nothing; yes maybe no", "yes"),  # the first yes/no token
    ("object_presence", "Yesterday", None),
    ("object_presence", "", None),
    ("object_count", "two", "2"),
    ("object_count", "3 cars", "3"),
    ("object_count", "There are 07 people", "7"),
    ("object_count", "three or two", "2"),  # number words in numeric order, not text order
    ("object_count", "seventeen", "17"),
    ("object_count", "many", None),
    ("group_location", "top left", "upper-left"),
    ("group_location", "Bottom-right corner", "lower-right"),
    ("group_location", "centre", "center"),
    ("group_location", "the car is on the left side", "left"),
    ("group_location", "In the middle", None),  # "middle" is accepted_answers-only, the parser ignores it
    ("group_location", "a bright spot", "right"),  # official substring match: "bright" contains "right"
    ("dominant_object_class", "Cars", "car"),
    ("dominant_object_class", "other vehicles and a person", "other vehicle"),  # the fixed class order
    ("dominant_object_class", "people", None),
    ("dominant_object_class", "None.", "none"),
])
def test_parse_awkward_answers(qtype, answer, parsed):
    assert parse_answer(qtype, answer) == parsed


def row(qid, bid, qtype, canonical, prediction, status="success", cls=None, accepted=None):
    return {"question_id": qid, "benchmark_id": bid, "question_type": qtype, "canonical_answer": canonical,
            "accepted_answers": accepted or [canonical], "object_class": cls, "prediction": prediction,
            "status": status}


def test_report_against_hand_counts():
    rows = [
        row("q1", "A", "object_presence", "yes", "Yes.", cls="car"),
        row("q2", "A", "object_presence", "no", "yes", cls="person"),
        row("q3", "B", "object_presence", "no", "No", cls="car"),
        row("q4", "B", "object_presence", "yes", "no idea", status="error", cls="person"),  # failed: scored ""
        row("q5", "A", "object_count", "2", "two", accepted=["2", "two"]),
        row("q6", "C", "object_count", "3", "3 cars", accepted=["3", "three"]),
        row("q7", "C", "group_location", "upper-left", "top left", accepted=["upper-left", "upper left", "top-left", "top left"]),
        row("q8", "C", "group_location", "center", "", accepted=["center", "middle", "centre"]),
        row("q9", "B", "dominant_object_class", "car", "Cars"),
    ]
    rep = score_hit_uav(rows, n_boot=200)
    # Correct: q1, q3, q5, q6, q7, q9 = 6 of 9; unparsed: q4 (error → ""), q8 ("") = 2 of 9.
    assert rep["overall"]["rows"] == 9 and rep["overall"]["images"] == 3
    assert rep["overall"]["accuracy"] == round(100 * 6 / 9, 4)
    assert rep["overall"]["parse_failure_rate"] == round(100 * 2 / 9, 4)
    assert rep["by_type"]["object_presence"]["accuracy"] == 50.0
    assert rep["presence_by_answer"]["yes"]["accuracy"] == 50.0 and rep["presence_by_answer"]["no"]["accuracy"] == 50.0
    assert rep["presence_by_class"]["car"]["accuracy"] == 100.0 and rep["presence_by_class"]["person"]["accuracy"] == 0.0
    assert rep["confusion"] == {"yes->yes": 1, "no->yes": 1, "no->no": 1, "yes->unparsed": 1}
    assert rep["confusion_by_type"]["group_location"] == {"upper-left->upper-left": 1, "center->unparsed": 1}
    # accepted_answers (not the official metric): "Yes." q1, "No" q3, "two" q5, "top left" q7 = 4 of 9
    # ("3 cars" and "Cars" parse but are not an accepted answer).
    acc = rep["accepted_answers_exact_match"]
    assert acc["overall"]["accuracy"] == round(100 * 4 / 9, 4) and "parse_failure_rate" not in acc["overall"]
    assert acc["by_type"]["object_count"]["accuracy"] == 50.0

    # The CI is the image-cluster bootstrap: written here independently with rng.choice.
    correct = {"A": [1, 0, 1], "B": [1, 0, 1], "C": [1, 1, 0]}
    rng, ids, draws = random.Random(42), sorted(correct), []
    for _ in range(200):
        drawn = [v for i in (rng.choice(ids) for _ in ids) for v in correct[i]]
        draws.append(statistics.fmean(drawn))
    draws.sort()

    def pct(q):
        pos = (len(draws) - 1) * q
        lo = int(pos)
        return draws[lo] + (draws[min(lo + 1, len(draws) - 1)] - draws[lo]) * (pos - lo)

    assert rep["overall"]["accuracy_ci95"] == pytest.approx([round(100 * pct(0.025), 4), round(100 * pct(0.975), 4)])


def test_ci_is_the_image_cluster_bootstrap():
    """Written here independently: draw |images| ids with rng.choice from Random(42), the draw's
    statistic is the mean over all rows of the drawn images, linear-interpolated 2.5/97.5%."""
    rng = random.Random(5)
    correct = {f"HIT-UAV:{i}": [rng.randint(0, 1) for _ in range(rng.randint(1, 4))] for i in range(12)}
    rows = [row(f"{b}-{j}", b, "object_presence", "yes", "yes" if c else "no", cls="car")
            for b, cs in correct.items() for j, c in enumerate(cs)]
    draws, ids, boot = [], sorted(correct), random.Random(42)
    for _ in range(500):
        draws.append(statistics.fmean(v for i in (boot.choice(ids) for _ in ids) for v in correct[i]))
    draws.sort()

    def pct(q):
        pos = (len(draws) - 1) * q
        lo = int(pos)
        return draws[lo] + (draws[min(lo + 1, len(draws) - 1)] - draws[lo]) * (pos - lo)

    got = score_hit_uav(rows, n_boot=500)["overall"]
    assert got["accuracy_ci95"] == pytest.approx([round(100 * pct(0.025), 4), round(100 * pct(0.975), 4)])
    assert got["accuracy"] == round(100 * statistics.fmean(v for cs in correct.values() for v in cs), 4)


def test_scoring_rejects_duplicates_and_unknown_types():
    with pytest.raises(ValueError, match="duplicate question_ids"):
        score_hit_uav([row("q1", "A", "object_presence", "yes", "yes")] * 2)
    with pytest.raises(ValueError, match="q1: unknown question_type 'colour'"):
        score_hit_uav([row("q1", "A", "colour", "red", "red")])
