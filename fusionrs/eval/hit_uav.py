"""HIT-UAV real thermal benchmark: annotation readers, the VQA builder and the VQA scorer.

    fusionrs eval-data hit-uav-vqa /data/HIT-UAV/normal_json --out out/hit_uav_vqa.jsonl
    python -c "from fusionrs.eval.hit_uav import write_hit_uav_vqa as w; \
        print(w('../shared/data/hit-uav-sample', '/tmp/hit.jsonl'))"

HIT-UAV (Suo et al., Scientific Data 2023) ships its boxes in two layouts, both read here:
- COCO-like JSON: `test.json` or `annotations/test.json` under the root, with keys `annotation`
  and `filename` (COCO's `annotations` / `file_name` are accepted too); images in `test/`
  (the release's `normal_json/test/`), `images/` or `JPEGImages/`.
- per-image VOC XML: `Annotations/*.xml`, images beside them in `images/` or `JPEGImages/`;
  when `ImageSets/Main/test.txt` is there, only the images it lists (the release's normal_xml/
  keeps every split's XML in one folder).
One record per image: image_id, file name, width, height and its boxes as (class, x, y, w, h).
Classes Person, Car, Bicycle, OtherVehicle become person, car, bicycle, other vehicle; DontCare
is dropped. A malformed file or entry raises HitUavFormatError naming it: the benchmark is
derived from every image of the split (the presence balance counts all of them), so a dropped
image would silently change other images' questions.

image_id: the JSON's numeric id (the official builder's, used in its sha256 ordering, question
numbering and benchmark_id); the VOC XML carries no id, so there it is the file stem. The same
annotations therefore give the same boxes in both layouts, but only the JSON layout reproduces
the official question selection; `read_hit_uav` prefers the JSON when both are present.

The VQA builder and the scorer follow the official build_hit_uav_vqa.py,
prepare_hit_uav_real_vqa_manifest.py and score_hit_uav_real_vqa.py (official implementation §8,
§10; docs/evaluation.md lists where this module differs and why).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from fusionrs.core.storage import Storage, join
from fusionrs.eval.audit import normalized, prediction_of
from fusionrs.eval.vlm_metrics import bootstrap_ci, normalize_answer

DATASET = "HIT-UAV"
SEED = 20260726
MAX_NEW_TOKENS = 12
LABEL_SOURCE = "official_bbox_annotation"
# The official builder iterates the category names sorted; HIT-UAV has exactly these four.
CLASSES = ("bicycle", "car", "other vehicle", "person")
DONT_CARE = "dontcare"
# Annotation name (lower-cased, '-'/'_' as spaces, whitespace collapsed) → class. The synonyms are
# the official CLIP presence evaluation's map; HIT-UAV itself only uses the first spelling of each.
_CLASS_NAMES = {"person": "person", "people": "person", "pedestrian": "person", "car": "car",
                "bicycle": "bicycle", "bike": "bicycle", "othervehicle": "other vehicle",
                "other vehicle": "other vehicle", "vehicle": "other vehicle"}

PRESENCE, COUNT, LOCATION, DOMINANT = "object_presence", "object_count", "group_location", "dominant_object_class"
QUESTION_TYPES = (PRESENCE, COUNT, LOCATION, DOMINANT)
ANSWER_TYPES = {PRESENCE: "yes_no", COUNT: "integer", LOCATION: "region", DOMINANT: "class_name"}
PROMPT = "Use only the visible content of this real sensor-captured thermal aerial image. {question} {suffix}"
PROMPT_SUFFIXES = {
    PRESENCE: "Answer with exactly yes or no.",
    COUNT: "Answer with exactly one non-negative integer.",
    LOCATION: "Answer with exactly one region label from: upper-left, upper, upper-right, left, center, right, "
              "lower-left, lower, lower-right.",
    DOMINANT: "Answer with exactly one class label from: person, car, bicycle, other vehicle, none.",
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
REGION_SYNONYMS = {
    "upper-left": ("upper left", "top-left", "top left"), "upper-right": ("upper right", "top-right", "top right"),
    "lower-left": ("lower left", "bottom-left", "bottom left"),
    "lower-right": ("lower right", "bottom-right", "bottom right"),
    "upper": ("top",), "lower": ("bottom",), "center": ("middle", "centre"),
}
# The scorer's parse orders: the first listed item found in the answer wins.
REGION_PARSE_ORDER = ("upper-left", "upper-right", "lower-left", "lower-right", "center", "upper", "lower", "left",
                      "right")
DOMINANT_PARSE_ORDER = ("other vehicle", "bicycle", "person", "car", "none")
JSON_CANDIDATES = ("test.json", "annotations/test.json")
IMAGE_DIRS = ("test", "images", "JPEGImages")


class HitUavFormatError(ValueError):
    """A malformed annotation file or entry; the message names it."""


class Box(NamedTuple):
    cls: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class HitUavImage:
    image_id: int | str
    file_name: str
    width: int
    height: int
    boxes: tuple[Box, ...]

    def counts(self) -> dict[str, int]:
        """Boxes per class, in CLASSES order, classes without boxes left out."""
        c = Counter(b.cls for b in self.boxes)
        return {cls: c[cls] for cls in CLASSES if c[cls]}


# -- readers ---------------------------------------------------------------------------
def class_label(name: str, where: str) -> str | None:
    """Our class for an annotation name; None for DontCare; an unknown name is an error."""
    key = " ".join(str(name).lower().replace("-", " ").replace("_", " ").split())
    if key.replace(" ", "") == DONT_CARE:
        return None
    if key not in _CLASS_NAMES:
        raise HitUavFormatError(
            f"{where}: unknown class {name!r} (expected Person, Car, Bicycle, OtherVehicle, DontCare)")
    return _CLASS_NAMES[key]


def _number(value, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise HitUavFormatError(f"{where}: not a number: {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise HitUavFormatError(f"{where}: not a finite number: {value!r}")
    return v


def _size(value, where: str) -> int:
    v = _number(value, where)
    if v <= 0 or not v.is_integer():
        raise HitUavFormatError(f"{where}: image size must be a positive integer, got {value!r}")
    return int(v)


def _file_name(value, where: str) -> str:
    # File names become paths under the image folder: a bare name only, never a path.
    if not isinstance(value, str) or not value.strip() or value != posixpath.basename(value) or "\\" in value \
            or value in (".", ".."):
        raise HitUavFormatError(f"{where}: file name must be a bare file name, got {value!r}")
    return value


def _box(cls: str, x, y, w, h, where: str) -> Box:
    x, y, w, h = (_number(v, where) for v in (x, y, w, h))
    if w < 0 or h < 0:
        raise HitUavFormatError(f"{where}: negative box size ({w}, {h})")
    return Box(cls, x, y, w, h)


def read_voc(root: str, storage: Storage | None = None, image_set: str | None = None) -> list[HitUavImage]:
    """`Annotations/*.xml` under root (only the stems listed in `ImageSets/Main/<image_set>.txt`
    when image_set is given), one record each, sorted by file name."""
    storage = storage or Storage()
    files = storage.list_files(join(root, "Annotations"), "*.xml")
    if not files:
        raise HitUavFormatError(f"{join(root, 'Annotations')}: no *.xml annotation files")
    if image_set:
        list_uri = join(root, "ImageSets", "Main", f"{image_set}.txt")
        wanted = [line.strip() for line in storage.read_bytes(list_uri).decode("utf-8").splitlines() if line.strip()]
        by_stem = {posixpath.splitext(posixpath.basename(u.replace("\\", "/")))[0]: u for u in files}
        missing = [w for w in wanted if w not in by_stem]
        if missing:
            raise HitUavFormatError(f"{list_uri}: {len(missing)} listed images have no XML, e.g. {missing[:3]}")
        files = [by_stem[w] for w in dict.fromkeys(wanted)]
    records = [_voc_record(uri, storage.read_bytes(uri)) for uri in files]
    _no_duplicates([r.file_name for r in records], "file name", join(root, "Annotations"))
    return sorted(records, key=lambda r: r.file_name)


def _voc_record(uri: str, data: bytes) -> HitUavImage:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise HitUavFormatError(f"{uri}: not well-formed XML ({e})") from None

    def text(node, path: str, where: str) -> str:
        found = node.find(path)
        if found is None or found.text is None or not found.text.strip():
            raise HitUavFormatError(f"{where}: missing <{path}>")
        return found.text.strip()

    file_name = _file_name(text(root, "filename", uri), f"{uri} <filename>")
    width = _size(text(root, "size/width", uri), f"{uri} <size/width>")
    height = _size(text(root, "size/height", uri), f"{uri} <size/height>")
    boxes = []
    for i, obj in enumerate(root.findall("object")):
        where = f"{uri} <object> #{i}"
        cls = class_label(text(obj, "name", where), where)
        if cls is None:
            continue
        x0, y0, x1, y1 = (_number(text(obj, f"bndbox/{k}", where), where) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(_box(cls, x0, y0, x1 - x0, y1 - y0, where))
    return HitUavImage(posixpath.splitext(file_name)[0], file_name, width, height, tuple(boxes))


def read_coco(annotation_uri: str, storage: Storage | None = None) -> list[HitUavImage]:
    """The COCO-like JSON (HIT-UAV's `annotation`/`filename` or COCO's `annotations`/`file_name`),
    one record per entry of `images`, sorted by image id; boxes keep the file's order."""
    storage = storage or Storage()
    try:
        doc = json.loads(storage.read_bytes(annotation_uri))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HitUavFormatError(f"{annotation_uri}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise HitUavFormatError(f"{annotation_uri}: top level must be an object")
    if "annotations" in doc and "annotation" in doc:
        raise HitUavFormatError(f"{annotation_uri}: both 'annotations' and 'annotation' present; which one is meant?")
    key = "annotations" if "annotations" in doc else "annotation"
    for k in ("images", "categories", key):
        if not isinstance(doc.get(k), list):
            raise HitUavFormatError(f"{annotation_uri}: '{k}' must be a list")

    categories: dict[int, str | None] = {}
    for i, cat in enumerate(doc["categories"]):
        where = f"{annotation_uri} categories[{i}]"
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise HitUavFormatError(f"{where}: needs 'id' and 'name'")
        categories[_int_id(cat["id"], where)] = class_label(cat["name"], where)

    images: dict[int, dict] = {}
    for i, img in enumerate(doc["images"]):
        where = f"{annotation_uri} images[{i}]"
        if not isinstance(img, dict) or "id" not in img:
            raise HitUavFormatError(f"{where}: needs 'id'")
        image_id = _int_id(img["id"], where)
        if image_id in images:
            raise HitUavFormatError(f"{where}: duplicate image id {image_id}")
        name = img.get("file_name", img.get("filename"))
        images[image_id] = {"file_name": _file_name(name, f"{where} file name"),
                            "width": _size(img.get("width"), f"{where} width"),
                            "height": _size(img.get("height"), f"{where} height"), "boxes": []}
    _no_duplicates([v["file_name"] for v in images.values()], "file name", annotation_uri)

    for i, ann in enumerate(doc[key]):
        where = f"{annotation_uri} {key}[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            raise HitUavFormatError(f"{where}: not an object")
        image_id = _int_id(ann.get("image_id"), f"{where} image_id")
        cat_id = _int_id(ann.get("category_id"), f"{where} category_id")
        if image_id not in images:
            raise HitUavFormatError(f"{where}: image_id {image_id} is not in 'images'")
        if cat_id not in categories:
            raise HitUavFormatError(f"{where}: category_id {cat_id} is not in 'categories'")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise HitUavFormatError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        if categories[cat_id] is not None:
            images[image_id]["boxes"].append(_box(categories[cat_id], *bbox, where))

    return [HitUavImage(i, v["file_name"], v["width"], v["height"], tuple(v["boxes"]))
            for i, v in sorted(images.items())]


def _int_id(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HitUavFormatError(f"{where}: id must be an integer, got {value!r}")
    return value


def _no_duplicates(values: list[str], what: str, where: str) -> None:
    dup = sorted(v for v, n in Counter(values).items() if n > 1)
    if dup:
        raise HitUavFormatError(f"{where}: duplicate {what}s {dup[:5]}")


def annotation_source(root: str, storage: Storage | None = None) -> tuple[str, str]:
    """("coco", json_uri) when a COCO-like JSON is there (preferred: it carries the official image
    ids), else ("voc", root) when `Annotations/` holds XML files."""
    storage = storage or Storage()
    for rel in JSON_CANDIDATES:
        if storage.exists(join(root, rel)):
            return "coco", join(root, rel)
    if storage.list_files(join(root, "Annotations"), "*.xml"):
        return "voc", root
    raise HitUavFormatError(f"{root}: no HIT-UAV annotations ({', '.join(JSON_CANDIDATES)} or Annotations/*.xml)")


def voc_image_set(root: str, storage: Storage) -> str | None:
    """"test" when `ImageSets/Main/test.txt` exists: the benchmark is the test split."""
    return "test" if storage.exists(join(root, "ImageSets", "Main", "test.txt")) else None


def read_hit_uav(root: str, storage: Storage | None = None) -> list[HitUavImage]:
    storage = storage or Storage()
    layout, uri = annotation_source(root, storage)
    return read_coco(uri, storage) if layout == "coco" else read_voc(uri, storage, voc_image_set(uri, storage))


def image_dir(root: str, file_names: list[str], storage: Storage | None = None) -> str:
    """The folder under root (test/, images/ or JPEGImages/) that holds every listed image; an
    error names the missing ones when none does."""
    storage = storage or Storage()
    best = None
    for rel in IMAGE_DIRS:
        present = {posixpath.basename(u.replace("\\", "/")) for u in storage.list_files(join(root, rel))}
        missing = [f for f in file_names if f not in present]
        if not missing:
            return join(root, rel)
        if present and (best is None or len(missing) < len(best[1])):
            best = (rel, missing)
    if best is None:
        raise FileNotFoundError(f"{root}: no image folder ({', '.join(IMAGE_DIRS)})")
    rel, missing = best
    raise FileNotFoundError(f"{join(root, rel)}: {len(missing)} HIT-UAV images missing, e.g. {missing[:3]}")


# -- the VQA builder ---------------------------------------------------------------------
def stable_key(seed: int, value: str) -> str:
    return hashlib.sha256(f"{seed}:{value}".encode("utf-8")).hexdigest()


def region_name(x: float, y: float, width: float, height: float) -> str:
    """Thirds of the image; strictly beyond a third line leaves the middle band."""
    horizontal = "left" if x < width / 3 else "right" if x > 2 * width / 3 else "center"
    vertical = "upper" if y < height / 3 else "lower" if y > 2 * height / 3 else "middle"
    if vertical == "middle":
        return horizontal  # "center" when both are in the middle band
    return vertical if horizontal == "center" else f"{vertical}-{horizontal}"


def dominant_class(counts: dict[str, int]) -> str | None:
    """The unique most frequent class; "none" without boxes; None (skip the image) on a tie."""
    if not counts:
        return "none"
    top = max(counts.values())
    winners = [c for c, n in counts.items() if n == top]
    return winners[0] if len(winners) == 1 else None


def accepted_answers(answer: str, answer_type: str) -> list[str]:
    """The official expansions: number words 0–20, region synonyms with hyphen/space variants."""
    answer = str(answer).strip().lower()
    out = [answer]
    if answer_type == "integer" and 0 <= int(answer) < len(NUMBER_WORDS):
        out.append(NUMBER_WORDS[int(answer)])
    if answer_type == "region":
        out.extend(REGION_SYNONYMS.get(answer, ()))
    return list(dict.fromkeys(out))


def prompt_for(question: str, question_type: str) -> str:
    return PROMPT.format(question=question, suffix=PROMPT_SUFFIXES[question_type])


def _row(n: int, image: HitUavImage, question_type: str, question: str, answer: str, object_class: str | None) -> dict:
    answer_type = ANSWER_TYPES[question_type]
    locator = f"test/{image.file_name}"
    return {
        "question_id": f"HITVQA-{n:05d}", "image_id": image.image_id, "image_locator": locator,
        "question_type": question_type, "question": question, "answer": answer, "answer_type": answer_type,
        "object_class": object_class, "label_source": LABEL_SOURCE,
        "benchmark_id": f"{DATASET}:{image.image_id}", "dataset": DATASET, "ir_image": locator,
        "canonical_answer": answer.lower(), "accepted_answers": accepted_answers(answer, answer_type),
        "prompt": prompt_for(question, question_type), "max_new_tokens": MAX_NEW_TOKENS,
    }


def build_hit_uav_vqa(images: list[HitUavImage], seed: int = SEED) -> list[dict]:
    """The official question set and numbering: presence questions class by class (CLASSES order;
    the selected positives, then the selected negatives, each in sha256 order), then image by image
    in image-id order its count and location questions per present class, then its dominant class."""
    _no_duplicates([str(i.image_id) for i in images], "image id", "HIT-UAV records")
    by_id = sorted(images, key=lambda i: i.image_id)
    rows: list[dict] = []
    for cls in CLASSES:
        positives = [i for i in by_id if cls in i.counts()]
        negatives = [i for i in by_id if cls not in i.counts()]
        positives.sort(key=lambda i: stable_key(seed, f"presence-positive:{cls}:{i.image_id}"))
        negatives.sort(key=lambda i: stable_key(seed, f"presence:{cls}:{i.image_id}"))
        k = min(len(positives), len(negatives))
        for image, answer in [(i, "yes") for i in positives[:k]] + [(i, "no") for i in negatives[:k]]:
            rows.append(_row(len(rows) + 1, image, PRESENCE, f"Is a {cls} visible in this thermal image?", answer, cls))
    for image in by_id:
        counts = image.counts()
        for cls, n in counts.items():
            rows.append(_row(len(rows) + 1, image, COUNT, f"How many {cls} objects are visible?", str(n), cls))
            boxes = [b for b in image.boxes if b.cls == cls]
            mean_x = sum(b.x + b.w / 2 for b in boxes) / len(boxes)
            mean_y = sum(b.y + b.h / 2 for b in boxes) / len(boxes)
            rows.append(_row(len(rows) + 1, image, LOCATION,
                             f"In which image region is the center of the {cls} group located?",
                             region_name(mean_x, mean_y, image.width, image.height), cls))
        answer = dominant_class(counts)
        if answer is not None:
            rows.append(_row(len(rows) + 1, image, DOMINANT, "Which annotated object class appears most frequently?",
                             answer, None))
    return rows


def summarize_vqa(rows: list[dict], images: int) -> dict:
    return {"images": images, "questions": len(rows),
            "question_type_counts": dict(sorted(Counter(r["question_type"] for r in rows).items())),
            "presence_answer_counts": dict(sorted(Counter(r["answer"] for r in rows
                                                          if r["question_type"] == PRESENCE).items())),
            "classes": list(CLASSES), "label_source": LABEL_SOURCE}


def write_hit_uav_vqa(root: str, out_jsonl: str, seed: int = SEED, storage: Storage | None = None) -> dict:
    """Read the annotations under root, check every image is there, write the VQA manifest (one
    JSON row per question) and `<out_jsonl>.summary.json`; returns the summary."""
    storage = storage or Storage()
    layout, uri = annotation_source(root, storage)
    images = read_hit_uav(root, storage)
    folder = image_dir(root, [i.file_name for i in images], storage)
    rows = build_hit_uav_vqa(images, seed)
    summary = {**summarize_vqa(rows, len(images)), "seed": seed, "layout": layout, "annotations": uri,
               "image_dir": folder, "output": out_jsonl}
    storage.write_text(out_jsonl, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    storage.write_text(out_jsonl + ".summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


# -- scoring -------------------------------------------------------------------------------
def parse_answer(question_type: str, prediction: str) -> str | None:
    """The official task-aware parse; None when nothing parses. Matching is on substrings of the
    normalized text, as the official scorer ("bright" contains "right", "cars" contains "car")."""
    text = normalized(prediction)  # [a-z0-9]+ tokens joined by single spaces
    if question_type == PRESENCE:
        return next((t for t in text.split() if t in ("yes", "no")), None)
    if question_type == COUNT:
        m = re.search(r"\b\d+\b", text)
        if m:
            return str(int(m.group()))
        # Number words in numeric order, not in the order they appear.
        return next((str(v) for v, w in enumerate(NUMBER_WORDS) if re.search(rf"\b{w}\b", text)), None)
    if question_type == LOCATION:
        text = text.replace("top", "upper").replace("bottom", "lower").replace("centre", "center")
        return next((r for r in REGION_PARSE_ORDER if r.replace("-", " ") in text), None)
    if question_type == DOMINANT:
        return next((c for c in DOMINANT_PARSE_ORDER if c in text), None)
    raise ValueError(f"unknown HIT-UAV question_type {question_type!r}")


def accepted_match(prediction: str, accepted: list[str]) -> float:
    """The official generic-VQA exact match (normalize_answer equality with any accepted answer);
    reported beside the official HIT-UAV accuracy, which ignores accepted_answers."""
    p = normalize_answer(prediction)
    return float(p in {normalize_answer(a) for a in accepted})


def score_rows(rows: list[dict]) -> list[dict]:
    """Each prediction row (manifest fields + prediction + status) with parsed_answer, correct
    (official: parsed == lower-cased canonical_answer) and accepted_correct. A row that did not
    succeed is scored as an empty prediction: wrong, and still in the denominator."""
    _no_duplicates([r["question_id"] for r in rows], "question_id", "HIT-UAV predictions")
    out = []
    for r in rows:
        if r.get("question_type") not in QUESTION_TYPES:
            raise ValueError(f"{r.get('question_id')}: unknown question_type {r.get('question_type')!r}")
        pred = prediction_of(r)
        parsed = parse_answer(r["question_type"], pred)
        out.append({**r, "parsed_answer": parsed, "correct": float(parsed == str(r["canonical_answer"]).lower()),
                    "accepted_correct": accepted_match(pred, r.get("accepted_answers") or [r["canonical_answer"]])})
    return out


def _summary(rows: list[dict], metric: str, n_boot: int, seed: int) -> dict:
    if not rows:
        return {"rows": 0, "images": 0, "accuracy": None}
    by_image: dict[str, list[float]] = {}
    for r in rows:
        by_image.setdefault(r["benchmark_id"], []).append(r[metric])
    mean, lo, hi = bootstrap_ci(by_image, n_boot, seed)  # a fresh Random(seed) per group, as the official
    out = {"rows": len(rows), "images": len(by_image), "accuracy": round(mean, 4),
           "accuracy_ci95": [round(lo, 4), round(hi, 4)]}
    if metric == "correct":
        out["parse_failure_rate"] = round(100 * sum(r["parsed_answer"] is None for r in rows) / len(rows), 4)
    return out


def score_hit_uav(rows: list[dict], n_boot: int = 1000, seed: int = 42) -> dict:
    """The official report (accuracy ×100 with the image-cluster bootstrap 95% CI, parse-failure
    rate; overall, by type, presence by answer and by class; the presence confusion counts), plus
    a per-type confusion and, labelled apart, accuracy against accepted_answers."""
    scored = score_rows(rows)
    presence = [r for r in scored if r["question_type"] == PRESENCE]
    types = sorted({r["question_type"] for r in scored})

    def groups(metric: str) -> dict:
        return {"overall": _summary(scored, metric, n_boot, seed),
                "by_type": {t: _summary([r for r in scored if r["question_type"] == t], metric, n_boot, seed)
                            for t in types}}

    confusion_by_type: dict[str, dict[str, int]] = {}
    for r in scored:
        key = f"{r['canonical_answer']}->{r['parsed_answer'] or 'unparsed'}"
        cell = confusion_by_type.setdefault(r["question_type"], {})
        cell[key] = cell.get(key, 0) + 1
    return {
        **groups("correct"),
        "presence_by_answer": {a: _summary([r for r in presence if r["canonical_answer"] == a], "correct", n_boot, seed)
                               for a in ("yes", "no")},
        "presence_by_class": {c: _summary([r for r in presence if r.get("object_class") == c], "correct", n_boot, seed)
                              for c in sorted({r.get("object_class") for r in presence})},
        "confusion": confusion_by_type.get(PRESENCE, {}),
        "confusion_by_type": confusion_by_type,
        "accepted_answers_exact_match": {
            "note": "not the official HIT-UAV metric: normalized exact match against accepted_answers",
            **groups("accepted_correct")},
    }


def row_scores(row: dict) -> dict[str, float]:
    """Per-row scores for the paired comparison (audit.paired_comparison)."""
    r = score_rows([row])[0]
    return {"accuracy": r["correct"], "accepted_exact_match": r["accepted_correct"]}
