"""`fusionrs sample OUT`: procedurally generated aerial-like scenes in the five real formats.

Scenes (farmland, forest, lake, river, residential, highway, airport, port, parking lot, beach,
bare land, meadow, storage tanks) are drawn with numpy/PIL; their captions and class labels
describe what is drawn. The generator also plants the dirt a real collection has, and writes
`OUT/records.json`: every record it wrote (source, record id, sample id) and, for each planted
problem, what the build must do with it. It writes data, not a config: `configs/demo.yaml` is
the build config over these sources (`source_overrides` points its roots at another folder).
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

from fusionrs.build.readers.base import make_sample_id

SIZE = 256
CLASSES = ["farmland", "forest", "lake", "river", "dense_residential", "highway", "airport", "port",
           "parking_lot", "beach", "bare_land", "meadow", "storage_tanks"]

CAPTIONS = {
    "farmland": ["many pieces of farmland are arranged neatly in rectangular plots",
                 "green and brown farmland fields are divided by narrow paths",
                 "several crop fields of different colors lie side by side",
                 "rectangular farmlands cover the whole area",
                 "the farmland is divided into many neat plots"],
    "forest": ["a dense forest with many green trees", "the forest is covered by thick dark green trees",
               "many trees grow densely in the forest area", "a large piece of forest with lush trees",
               "dense trees cover the hills of the forest"],
    "lake": ["a blue lake is surrounded by green trees", "a calm lake lies in the middle of the meadow",
             "the lake is surrounded by grass and some trees", "a large lake with a curved shore",
             "green vegetation grows around the blue lake"],
    "river": ["a winding river goes through the green land", "a river flows across the area with trees beside it",
              "a curved river passes through the vegetation", "the river divides the land into two parts",
              "a long river runs through the fields"],
    "dense_residential": ["many buildings are densely arranged in the residential area",
                          "a dense residential area with many houses and roads",
                          "lots of houses with gray roofs are built along the streets",
                          "many buildings and some trees are in a dense residential area",
                          "rows of residential buildings line the roads"],
    "highway": ["a straight highway passes through the bare land", "a highway with several lanes crosses the area",
                "a long road goes through the fields", "some cars are driving on the highway",
                "a wide highway runs across the scene"],
    "airport": ["several airplanes are parked near the runway of an airport",
                "an airport with a long runway and some planes", "two planes are parked beside the runway",
                "the airport has a runway and a terminal area", "white airplanes stand on the apron of the airport"],
    "port": ["many boats are docked in the harbor", "several ships are moored at the piers of the port",
             "a port with docks and boats in the water", "some ships are parked along the pier",
             "the harbor has many boats near the docks"],
    "parking_lot": ["many cars are parked in a parking lot", "rows of cars are parked neatly in the parking lot",
                    "a large parking lot full of vehicles", "some cars are parked in lines in the lot",
                    "the parking lot is filled with many cars"],
    "beach": ["a sandy beach is next to the blue sea", "waves wash onto the yellow sand of the beach",
              "a long beach lies between the sea and the land", "the coastline has a sandy beach and waves",
              "the sea meets the beach with white waves"],
    "bare_land": ["a large piece of bare land with some sand", "the bare land is yellow and empty",
                  "a piece of bare land with a few tracks", "dry bare land covers the area",
                  "the desert land is flat with sand"],
    "meadow": ["a green meadow with lush grass", "the meadow is covered by green grass",
               "a large green grassland with a few bushes", "grass covers the whole meadow",
               "a flat meadow with green vegetation"],
    "storage_tanks": ["several white storage tanks stand in the industrial area",
                      "many round storage tanks are arranged in rows",
                      "some storage tanks are near the factory buildings",
                      "a group of circular storage tanks on the ground",
                      "white storage tanks are located beside a road"],
}


# ---------------------------------------------------------------------------------------
# Scene drawing.

def _noise(rng, scale=8, amp=20.0):
    small = rng.normal(0, 1, (SIZE // scale + 1, SIZE // scale + 1)).astype(np.float32)
    big = np.asarray(Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    return big * amp


def _base(rng, color, amp=18.0):
    a = np.empty((SIZE, SIZE, 3), np.float32)
    n = _noise(rng, 8, amp) + rng.normal(0, 6, (SIZE, SIZE))
    for c in range(3):
        a[..., c] = color[c] + n
    return a


def _img(a):
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _jit(rng, c, d=15):
    return tuple(int(np.clip(x + rng.integers(-d, d + 1), 0, 255)) for x in c)


def draw_scene(cls: str, rng: np.random.Generator) -> Image.Image:
    _, B, S, GR, W = (70, 120, 50), (40, 90, 160), (210, 190, 140), (120, 120, 120), (235, 235, 235)
    if cls == "farmland":
        img = _img(_base(rng, (110, 130, 70)))
        d = ImageDraw.Draw(img)
        nx, ny = rng.integers(3, 6, 2)
        for i in range(nx):
            for j in range(ny):
                col = _jit(rng, [(90, 140, 60), (150, 130, 80), (120, 160, 70), (170, 150, 100)][rng.integers(4)], 20)
                d.rectangle([i * SIZE // nx + 2, j * SIZE // ny + 2, (i + 1) * SIZE // nx - 2, (j + 1) * SIZE // ny - 2], fill=col)
    elif cls in ("forest", "meadow"):
        img = _img(_base(rng, (40, 85, 35) if cls == "forest" else (100, 150, 70), 25))
        d = ImageDraw.Draw(img)
        for _ in range(rng.integers(150, 300) if cls == "forest" else rng.integers(3, 10)):
            x, y, r = rng.integers(0, SIZE), rng.integers(0, SIZE), rng.integers(4, 10)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_jit(rng, (30, 70, 30), 15))
    elif cls == "lake":
        img = _img(_base(rng, (90, 130, 60)))
        d = ImageDraw.Draw(img)
        cx, cy = rng.integers(90, 166, 2)
        pts = [(cx + np.cos(t) * rng.integers(50, 90), cy + np.sin(t) * rng.integers(50, 90)) for t in np.linspace(0, 2 * np.pi, 14)]
        d.polygon(pts, fill=_jit(rng, B))
    elif cls == "river":
        img = _img(_base(rng, (95, 135, 65)))
        d = ImageDraw.Draw(img)
        x0, amp, ph = rng.integers(60, 190), rng.integers(20, 60), rng.uniform(0, 6)
        pts = [(x0 + amp * np.sin(y / 40 + ph), y) for y in range(-10, SIZE + 10, 8)]
        d.line(pts, fill=_jit(rng, B), width=int(rng.integers(18, 34)))
    elif cls == "dense_residential":
        img = _img(_base(rng, GR, 10))
        d = ImageDraw.Draw(img)
        for y in range(0, SIZE, 32):
            d.rectangle([0, y, SIZE, y + 5], fill=(90, 90, 90))
        for x in range(4, SIZE, 22):
            for y in range(8, SIZE, 32):
                d.rectangle([x, y + 2, x + 16, y + 22], fill=_jit(rng, [(180, 80, 60), (200, 200, 200), (150, 150, 160)][rng.integers(3)], 20))
    elif cls in ("highway", "bare_land"):
        img = _img(_base(rng, (185, 165, 120), 22))
        if cls == "highway":
            d = ImageDraw.Draw(img)
            ang = rng.uniform(-0.6, 0.6)
            c, s = np.cos(ang), np.sin(ang)
            d.line([(128 - 200 * s, 128 - 200 * c), (128 + 200 * s, 128 + 200 * c)], fill=(80, 80, 85), width=28)
            d.line([(128 - 200 * s, 128 - 200 * c), (128 + 200 * s, 128 + 200 * c)], fill=W, width=2)
        else:
            d = ImageDraw.Draw(img)
            for _ in range(rng.integers(1, 4)):
                d.line([tuple(rng.integers(0, SIZE, 2)), tuple(rng.integers(0, SIZE, 2))], fill=(160, 140, 100), width=3)
    elif cls == "airport":
        img = _img(_base(rng, (120, 140, 90)))
        d = ImageDraw.Draw(img)
        y = rng.integers(80, 170)
        d.rectangle([0, y, SIZE, y + 30], fill=(90, 90, 95))
        for x in range(10, SIZE, 30):
            d.rectangle([x, y + 14, x + 14, y + 16], fill=W)
        for _ in range(rng.integers(2, 5)):
            px, py = rng.integers(20, 236), rng.integers(10, max(11, y - 30))
            d.rectangle([px - 12, py - 2, px + 12, py + 2], fill=W)
            d.rectangle([px - 2, py - 10, px + 2, py + 10], fill=W)
    elif cls == "port":
        img = _img(_base(rng, B, 12))
        d = ImageDraw.Draw(img)
        d.rectangle([0, 0, SIZE, 60], fill=_jit(rng, GR))
        for x in range(20, SIZE, 50):
            d.rectangle([x, 60, x + 8, 180], fill=(150, 150, 150))
            for _ in range(2):
                by = rng.integers(70, 170)
                d.rectangle([x + 12, by, x + 30, by + 8], fill=W)
    elif cls == "parking_lot":
        img = _img(_base(rng, (100, 100, 105), 8))
        d = ImageDraw.Draw(img)
        for y in range(15, SIZE, 40):
            for x in range(8, SIZE, 14):
                if rng.random() < 0.75:
                    d.rectangle([x, y, x + 9, y + 18], fill=_jit(rng, [(200, 40, 40), (230, 230, 230), (30, 30, 30), (40, 60, 160)][rng.integers(4)], 20))
    elif cls == "beach":
        a = _base(rng, S)
        x0, amp, per, ph = rng.integers(60, 190), rng.integers(10, 50), rng.uniform(15, 60), rng.uniform(0, 6)
        sea = np.arange(SIZE)[None, :] > (x0 + amp * np.sin(np.arange(SIZE)[:, None] / per + ph))
        a[sea] = np.array(B, np.float32) + _noise(rng, 8, 10)[sea][:, None]
        img = _img(a)
    elif cls == "storage_tanks":
        img = _img(_base(rng, (150, 145, 135), 10))
        d = ImageDraw.Draw(img)
        for _ in range(rng.integers(4, 10)):
            x, y, r = rng.integers(25, 231), rng.integers(25, 231), rng.integers(10, 22)
            d.ellipse([x - r, y - r, x + r, y + r], fill=W, outline=(90, 90, 90), width=2)
    else:
        raise ValueError(cls)
    return img.filter(ImageFilter.SMOOTH)


def jpeg(img: Image.Image, q: int = 92, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q, **kw)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header that claims a huge image: the reader must refuse before decoding."""
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------
# Records and plants.

@dataclass
class Rec:
    cls: str
    image: bytes
    captions: list[str]
    ext: str = "jpg"
    plant: dict | None = None  # expectation for planted dirt
    same_group: str = ""  # name of the plant this one must share a group with


@dataclass
class SampleSet:
    records: dict[str, list[Rec]] = field(default_factory=dict)


SOURCES = [("RS5M", "rs5m_wds"), ("SkyScript", "skyscript_csv"), ("NWPU", "nwpu"),
           ("RSICD", "karpathy_json"), ("RSITMD", "karpathy_json")]


PLACES = ["in the upper part of the image", "near the center of the scene", "on the left side",
          "on the right side", "along the bottom of the image", "across the whole scene",
          "in the lower right corner", "in the upper left corner", "", ""]
CONTEXT = ["next to a small road", "beside a few trees", "near some bare ground", "close to a narrow path",
           "with a wide open area around", "surrounded by flat land", "", "", ""]


def _captions(cls, rng, n=5):
    """Template + place + context: varied like real captions, rarely identical by chance."""
    base = list(CAPTIONS[cls])
    rng.shuffle(base)
    out = []
    for b in base[:n]:
        extra = " ".join(x for x in (PLACES[rng.integers(len(PLACES))], CONTEXT[rng.integers(len(CONTEXT))]) if x)
        out.append(f"{b} {extra}".strip())
    return out


def _vary(img: Image.Image, rng) -> Image.Image:
    """One of the 8 rotations/flips: layouts differ, so pHashes of one class differ too."""
    k = int(rng.integers(8))
    if k & 4:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img.rotate(90 * (k & 3)) if k & 3 else img


def generate_records(per_source: int, seed: int) -> SampleSet:
    rng = np.random.default_rng(seed)
    out = SampleSet()
    for si, (name, fmt) in enumerate(SOURCES):
        recs = []
        for i in range(per_source):
            r = np.random.default_rng([seed, si, i])
            cls = CLASSES[int(r.integers(len(CLASSES)))]
            recs.append(Rec(cls, jpeg(_vary(draw_scene(cls, r), r)), _captions(cls, r, 1 if fmt == "rs5m_wds" else 5 if fmt != "skyscript_csv" else 2)))
        out.records[name] = recs
    _plant(out, rng)
    return out


def _plant(s: SampleSet, rng: np.random.Generator) -> None:
    """Plant dirt; each plant records what the build must do with it."""
    R = s.records

    def add(src, rec):
        R[src].append(rec)

    base = draw_scene("storage_tanks", np.random.default_rng(999))
    base_caps = ["several white storage tanks stand beside the factory area in rows"]
    # Near duplicates of one scene, across sources: same joint group.
    add("RSICD", Rec("storage_tanks", jpeg(base), base_caps * 5, plant={"kind": "near_dup_original"}))
    add("RSITMD", Rec("storage_tanks", jpeg(base, 60), ["round tanks are located near some industrial buildings"] * 5,
                      plant={"kind": "near_dup_reencoded"}, same_group="near_dup_original"))
    add("SkyScript", Rec("storage_tanks", jpeg(base.resize((200, 200))), ["storage tanks of an industrial site next to a road", ""],
                         plant={"kind": "near_dup_resized"}, same_group="near_dup_original"))
    add("RS5M", Rec("storage_tanks", jpeg(base.crop((3, 3, 253, 253)).resize((256, 256))),
                    ["aerial photo of oil storage tanks at an industrial complex"],
                    plant={"kind": "near_dup_cropped"}, same_group="near_dup_original"))
    # Identical captions on different images: same joint group.
    shared = "a small white church stands at the corner of two roads near houses"
    add("RSICD", Rec("dense_residential", jpeg(draw_scene("dense_residential", np.random.default_rng(1001))), [shared] * 5,
                     plant={"kind": "shared_caption_a"}))
    add("RSITMD", Rec("highway", jpeg(draw_scene("highway", np.random.default_rng(1002))), [shared] * 5,
                      plant={"kind": "shared_caption_b"}, same_group="shared_caption_a"))
    img = lambda c, k: jpeg(draw_scene(c, np.random.default_rng(2000 + k)))  # noqa: E731
    # Caption dirt (expectations: caption_status of the kept row, or a reject reason).
    add("RS5M", Rec("port", img("port", 1), ["Stock Photo of aerial view of many boats docked in the harbor pier"],
                    plant={"kind": "stock_photo", "caption_status": "original_stripped"}))
    add("RS5M", Rec("beach", img("beach", 2), ["© 2019 Shutterstock"],
                    plant={"kind": "copyright_only", "reject": "no_usable_caption", "caption_status": "no_usable_caption:boilerplate_only"}))
    add("SkyScript", Rec("lake", img("lake", 3), ["Google Earth view of a lake surrounded by trees and grass", ""],
                         plant={"kind": "google_earth", "caption_status": "original_stripped"}))
    add("RSICD", Rec("forest", img("forest", 4), ["una foresta densa con molti alberi verdi"] * 5,
                     plant={"kind": "non_english", "reject": "no_usable_caption", "caption_status": "no_usable_caption:non_english"}))
    add("NWPU", Rec("meadow", img("meadow", 5), ["ein grüne Wiese mit viel Gras und Büschen"] * 5,
                    plant={"kind": "non_english_with_class", "caption_status": "fallback_class:non_english"}))
    add("RSITMD", Rec("river", img("river", 6), ["a river"] * 5, plant={"kind": "too_short", "reject": "no_usable_caption", "caption_status": "no_usable_caption:too_short"}))
    add("RSICD", Rec("farmland", img("farmland", 7), [" ".join(["many fields of farmland with crops"] * 12)] * 5,
                     plant={"kind": "too_long", "reject": "no_usable_caption", "caption_status": "no_usable_caption:too_long"}))
    add("RS5M", Rec("meadow", img("meadow", 8), ["image"], plant={"kind": "generic", "reject": "no_usable_caption", "caption_status": "no_usable_caption:generic"}))
    add("NWPU", Rec("airport", img("airport", 9), ["an aerial image"] * 5,
                    plant={"kind": "generic_with_class", "caption_status": "fallback_class:generic"}))
    add("RSICD", Rec("lake", img("lake", 10), [""] * 5, plant={"kind": "empty_caption", "reject": "no_usable_caption", "caption_status": "no_usable_caption:empty"}))
    add("NWPU", Rec("bare_land", img("bare_land", 11), [""] * 5,
                    plant={"kind": "empty_caption_with_class", "caption_status": "fallback_class:empty"}))
    add("RS5M", Rec("highway", img("highway", 12), ["boats in a harbor"],
                    plant={"kind": "weak_rs5m", "reject": "no_usable_caption", "caption_status": "no_usable_caption:weak_rs5m"}))
    # Image dirt (expectations: reject reason, or an accepted row with an image note).
    good = jpeg(draw_scene("meadow", np.random.default_rng(3000)))
    add("RSICD", Rec("meadow", good[: len(good) // 2], CAPTIONS["meadow"], plant={"kind": "truncated_jpeg", "reject": "truncated_or_corrupt"}))
    add("RSITMD", Rec("meadow", b"", CAPTIONS["meadow"], plant={"kind": "zero_byte", "reject": "empty_file"}))
    add("SkyScript", Rec("meadow", b"this is a text file, not an image\n" * 10, CAPTIONS["meadow"][:2], ext="jpg",
                         plant={"kind": "non_image", "reject": "not_an_image"}))
    add("NWPU", Rec("forest", jpeg(draw_scene("forest", np.random.default_rng(3001)).convert("L")), CAPTIONS["forest"],
                    plant={"kind": "grayscale_jpeg", "reject": "grayscale_source"}))
    add("RSICD", Rec("farmland", jpeg(draw_scene("farmland", np.random.default_rng(3002)).convert("CMYK")), CAPTIONS["farmland"],
                     plant={"kind": "cmyk_jpeg", "image_note": "cmyk_to_rgb"}))
    rgba = draw_scene("port", np.random.default_rng(3003)).convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:, :128, 3] = 0
    add("RSITMD", Rec("port", png(Image.fromarray(a, "RGBA")), CAPTIONS["port"], ext="png",
                      plant={"kind": "png_alpha_transparent", "reject": "mostly_transparent"}))
    add("RSITMD", Rec("lake", png(draw_scene("lake", np.random.default_rng(3004)).convert("RGBA")), CAPTIONS["lake"], ext="png",
                      plant={"kind": "png_alpha_opaque", "image_note": "alpha_dropped"}))
    g16 = (np.asarray(draw_scene("bare_land", np.random.default_rng(3005)).convert("L"), np.uint16) * 257)
    add("SkyScript", Rec("bare_land", png(Image.fromarray(g16.astype("<u2"))), CAPTIONS["bare_land"][:2], ext="png",
                         plant={"kind": "png_16bit", "reject": "grayscale_source"}))
    add("RS5M", Rec("beach", bomb_png(), ["a sandy beach next to the sea with waves on the shore"], ext="png",
                    plant={"kind": "pixel_bomb", "reject": "too_many_pixels"}))


# ---------------------------------------------------------------------------------------
# Writers for the five formats.

def write_sample(out: str | Path, per_source: int = 40, seed: int = 0) -> dict:
    out = Path(out).resolve()
    s = generate_records(per_source, seed)
    planted = []

    written = []

    def note(source, record_id, rec):
        written.append({"source": source, "record_id": record_id, "sample_id": make_sample_id(source, record_id)})
        if rec.plant:
            planted.append({"source": source, "record_id": record_id, "sample_id": make_sample_id(source, record_id),
                            "same_group": rec.same_group, **rec.plant})

    # RS5M: webdataset tars of ~100 samples each.
    root = out / "RS5M"
    root.mkdir(parents=True, exist_ok=True)
    recs = s.records["RS5M"]
    for t in range(0, len(recs), 100):
        name = f"rs5m-{t // 100:05d}.tar"
        with tarfile.open(root / name, "w") as tar:
            for i, rec in enumerate(recs[t:t + 100]):
                key = f"{t + i:08d}"
                for ext, data in (("img_content", rec.image), ("img_name", f"{key}.{rec.ext}".encode()),
                                  ("caption", rec.captions[0].encode())):
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size = len(data)
                    tar.addfile(ti, io.BytesIO(data))
                note("RS5M", f"{name}/{key}", rec)

    # SkyScript: CSV + image files.
    root = out / "SkyScript"
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "skyscript.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title", "title_multi_objects"])
        for i, rec in enumerate(s.records["SkyScript"]):
            path = f"images/img_{i:06d}_US_.{rec.ext}"
            (root / path).write_bytes(rec.image)
            caps = rec.captions + [""] * (2 - len(rec.captions))
            w.writerow([path, caps[0], caps[1]])
            note("SkyScript", path, rec)

    # NWPU: class folders + NWPU-Captions JSON.
    root = out / "NWPU"
    doc: dict[str, list] = {}
    counters: dict[str, int] = {}
    for rec in s.records["NWPU"]:
        k = counters[rec.cls] = counters.get(rec.cls, 0) + 1
        fname = f"{rec.cls}_{k:03d}.{rec.ext}"
        (root / "NWPU_images" / rec.cls).mkdir(parents=True, exist_ok=True)
        (root / "NWPU_images" / rec.cls / fname).write_bytes(rec.image)
        caps = (rec.captions + [""] * 5)[:5]
        entry = {"filename": fname, "imgid": sum(counters.values()), "split": "train", "raw": caps[0],
                 **{f"raw_{j}": caps[j] for j in range(1, 5)}, "sentids": list(range(5))}
        doc.setdefault(rec.cls, []).append(entry)
        note("NWPU", f"{rec.cls}/{fname}", rec)
    (root / "dataset_nwpu.json").write_text(json.dumps(doc))

    # RSICD and RSITMD: Karpathy JSON + image folder.
    for name, ann, folder in (("RSICD", "dataset_rsicd.json", "RSICD_images"), ("RSITMD", "dataset_RSITMD.json", "images")):
        root = out / name
        (root / folder).mkdir(parents=True, exist_ok=True)
        images = []
        for i, rec in enumerate(s.records[name]):
            fname = f"{rec.cls}_{i:05d}.{rec.ext}"
            (root / folder / fname).write_bytes(rec.image)
            images.append({"filename": fname, "imgid": i, "split": "train", "sentids": list(range(i * 5, i * 5 + 5)),
                           "sentences": [{"raw": c, "tokens": c.split(), "imgid": i, "sentid": i * 5 + j}
                                         for j, c in enumerate(rec.captions)]})
            note(name, f"{folder}/{fname}" if name == "RSITMD" else fname, rec)
        # RSITMD's JSON names files relative to the images folder via "filepath".
        if name == "RSITMD":
            for im in images:
                im["filepath"] = folder
        (root / ann).write_text(json.dumps({"images": images, "dataset": name.lower()}))

    (out / "records.json").write_text(json.dumps({"records": written, "planted": planted}, indent=1))
    return {"out": str(out), "records": len(written), "planted": len(planted), "manifest": str(out / "records.json")}


# Where write_sample puts each source, relative to its output folder (the roots of configs/demo.yaml).
SOURCE_ROOTS = {"RS5M": "RS5M", "SkyScript": "SkyScript", "NWPU": "NWPU", "RSICD": "RSICD/RSICD_images",
                "RSITMD": "RSITMD"}


def source_overrides(config: str | Path, sample_dir: str | Path) -> list[str]:
    """`sources.N.root=...` overrides that point a config's sources (by name) at a sample folder
    (local, or a URI such as s3://bucket/prefix where the folder was uploaded)."""
    names = [src["name"] for src in yaml.safe_load(Path(config).read_text())["sources"]]
    base = str(sample_dir).rstrip("/") if "://" in str(sample_dir) else str(Path(sample_dir).resolve())
    return [f"sources.{i}.root={base}/{SOURCE_ROOTS[n]}" for i, n in enumerate(names)]


def read_manifest(sample_dir: str | Path) -> dict:
    """What write_sample wrote: {"records": [{source, record_id, sample_id}], "planted": [...]}."""
    return json.loads((Path(sample_dir) / "records.json").read_text())


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(write_sample(sys.argv[1], int(os.environ.get("PER_SOURCE", 40))))
