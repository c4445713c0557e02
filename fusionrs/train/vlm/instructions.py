"""Instruction data for VLM tuning: one row per (IR image, instruction, response), or per
(RGB image, IR image, instruction, response) with `inputs: rgb+ir`.

Tasks and their instruction texts are the paper's (paper-facts.md, "VLM instruction tuning"):

| task     | response                                                                          |
|----------|-----------------------------------------------------------------------------------|
| caption  | the original caption (A-original) or the IR-aware caption (B-iraware)            |
| scene    | the scene label: the source's class name, else derived from the caption (SCENES)  |
| object   | the objects / land-cover elements of the caption, comma-separated (OBJECTS)      |
| ir_cue   | the cue phrases of the IR-aware caption (B-iraware only: A has no IR-aware text)  |

Settings, as in the paper: A-original, B-iraware, C-mixed = A rows + B rows (the caption task
has exactly twice the rows). Rows come from the IR-aware subset (IR-aware caption accepted) in
every setting, so A and B see the same images. A sample whose scene cannot be derived, or whose
caption names no object or cue, gets no row for that task (counted in `skipped`), never a
made-up answer.

With `inputs: rgb+ir` the instruction texts name both images (INSTRUCTIONS_RGB_IR): the tasks,
responses and rows are the same; only what the model sees and is told differs.
"""

from __future__ import annotations

import re

from fusionrs.config.train import VLM_INPUTS as INPUTS
from fusionrs.config.train import VLM_TASKS as TASKS
from fusionrs.core.lexicon import IR_CUE_WORDS

INSTRUCTIONS = {
    "caption": "Describe this infrared remote sensing image in detail.",
    "scene": "What is the main scene type in this infrared remote sensing image? "
             "Answer with a concise scene label only.",
    "object": "What are the main objects or land-cover elements visible in this infrared remote sensing "
              "image? Answer with a concise comma-separated list.",
    "ir_cue": "What infrared-specific visual cues can be observed in this image? Mention visible grayscale "
              "intensity, high contrast, bright structures, low-texture or dark regions, and structural "
              "outlines if present.",
}
# The same tasks for a model shown the RGB image and its IR image (our addition: the paper's
# "dual-modal" tuning, like the official code, feeds the IR image alone; docs/vlm.md).
_PAIR = "this RGB remote sensing image and its infrared counterpart"
INSTRUCTIONS_RGB_IR = {
    "caption": f"Describe {_PAIR} in detail.",
    "scene": f"What is the main scene type in {_PAIR}? Answer with a concise scene label only.",
    "object": f"What are the main objects or land-cover elements visible in {_PAIR}? "
              "Answer with a concise comma-separated list.",
    "ir_cue": f"What infrared-specific visual cues can be observed in {_PAIR}? Mention visible grayscale "
              "intensity, high contrast, bright structures, low-texture or dark regions, and structural "
              "outlines if present.",
}


def instruction_texts(inputs: str = "ir") -> dict[str, str]:
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, not {inputs!r}")
    return INSTRUCTIONS if inputs == "ir" else INSTRUCTIONS_RGB_IR


MAX_NEW_TOKENS = {"caption": 96, "scene": 32, "object": 32, "ir_cue": 96}  # official: 96 captions, 32 VQA

# Scene labels derived from a caption: the first entry with a keyword in the caption wins, so
# specific scenes come before generic ones ("storage tank" before "industrial area"). Labels are
# NWPU-RESISC45 class names where one fits; SCENE_SYNONYMS maps other spellings onto them.
SCENES: list[tuple[str, tuple[str, ...]]] = [
    ("airport", ("airport", "runway", "terminal", "airplane", "aircraft", "apron")),
    ("baseball diamond", ("baseball",)),
    ("basketball court", ("basketball",)),
    ("tennis court", ("tennis",)),
    ("ground track field", ("track field", "running track", "soccer", "football")),
    ("golf course", ("golf",)),
    ("stadium", ("stadium",)),
    ("storage tank", ("storage tank", "tanks", "oil tank")),
    ("harbor", ("harbor", "harbour", "port", "dock", "pier", "ships", "boats", "moored")),
    ("bridge", ("bridge", "viaduct")),
    ("railway station", ("railway station", "train station")),
    ("railway", ("railway", "railroad", "train")),
    ("freeway", ("freeway",)),
    ("intersection", ("intersection", "crossroad")),
    ("roundabout", ("roundabout",)),
    ("overpass", ("overpass", "interchange")),
    ("parking lot", ("parking",)),
    ("beach", ("beach", "shore", "coast", "waves")),
    ("island", ("island",)),
    ("lake", ("lake", "pond", "reservoir")),
    ("river", ("river", "stream", "canal")),
    ("sea ice", ("sea ice", "ice floe")),
    ("snowberg", ("snow", "glacier")),
    ("desert", ("desert", "dune", "sand")),
    ("mountain", ("mountain", "hill", "cliff", "valley")),
    ("wetland", ("wetland", "marsh", "swamp")),
    ("terrace", ("terrace",)),
    ("circular farmland", ("circular farmland", "center pivot", "centre pivot")),
    ("rectangular farmland", ("farmland", "cropland", "crop", "fields", "field", "paddy", "farm")),
    ("forest", ("forest", "woods", "woodland", "trees")),
    ("meadow", ("meadow", "grassland", "grass", "lawn")),
    ("church", ("church", "cathedral")),
    ("palace", ("palace",)),
    ("thermal power station", ("power station", "power plant", "chimney", "cooling tower")),
    ("industrial area", ("industrial", "factory", "factories", "warehouse")),
    ("commercial area", ("commercial", "shopping", "mall")),
    ("dense residential", ("dense residential", "densely", "crowded")),
    ("sparse residential", ("sparse residential", "sparse houses", "scattered houses")),
    ("medium residential", ("residential", "houses", "homes", "neighborhood")),
    ("highway", ("highway", "road", "street")),
]
SCENE_SYNONYMS = {
    "harbour": "harbor", "port": "harbor", "parking": "parking lot", "parking area": "parking lot",
    "residential": "medium residential", "residential area": "medium residential",
    "industrial": "industrial area", "commercial": "commercial area", "farmland": "rectangular farmland",
    "farm": "rectangular farmland", "cropland": "rectangular farmland", "grassland": "meadow",
    "woodland": "forest", "woods": "forest", "road": "highway", "roads": "highway",
    "power station": "thermal power station", "power plant": "thermal power station",
    "storage tanks": "storage tank", "tanks": "storage tank", "ground track": "ground track field",
    "track field": "ground track field", "playground": "ground track field", "sea": "beach", "coast": "beach",
    "pond": "lake", "reservoir": "lake", "hill": "mountain", "hills": "mountain", "mountains": "mountain",
    "snow": "snowberg", "train station": "railway station", "dense residential area": "dense residential",
    "sparse residential area": "sparse residential", "medium residential area": "medium residential",
}

# Objects and land-cover elements: canonical term ← words that name it (plural folded in).
OBJECTS: dict[str, tuple[str, ...]] = {
    "airplane": ("airplane", "airplanes", "plane", "planes", "aircraft", "jet", "jets"),
    "runway": ("runway", "runways"), "terminal": ("terminal", "terminals"), "apron": ("apron",),
    "building": ("building", "buildings", "house", "houses", "home", "homes", "roof", "roofs", "warehouse",
                 "warehouses", "factory", "factories"),
    "road": ("road", "roads", "street", "streets", "highway", "highways", "freeway", "lane", "lanes", "path"),
    "vehicle": ("car", "cars", "vehicle", "vehicles", "truck", "trucks"),
    "parking lot": ("parking",), "bridge": ("bridge", "bridges", "viaduct"),
    "railway": ("railway", "railways", "railroad", "train", "trains", "track", "tracks"),
    "ship": ("ship", "ships", "boat", "boats", "vessel", "vessels"), "pier": ("pier", "piers", "dock", "docks"),
    "storage tank": ("tank", "tanks"), "water": ("water", "sea", "ocean", "lake", "lakes", "pond", "ponds",
                                                 "river", "rivers", "stream", "canal", "reservoir", "waves"),
    "beach": ("beach", "beaches", "sand", "shore", "coast"), "tree": ("tree", "trees", "forest", "forests", "woods"),
    "grass": ("grass", "lawn", "meadow", "meadows", "grassland"), "vegetation": ("vegetation", "bushes", "shrubs", "bush"),
    "farmland": ("farmland", "farmlands", "field", "fields", "crop", "crops", "cropland", "paddy"),
    "bare land": ("bare", "bareland", "desert", "soil"), "mountain": ("mountain", "mountains", "hill", "hills"),
    "court": ("court", "courts"), "playground": ("playground", "stadium", "pitch"),
    "pool": ("pool", "pools"), "church": ("church",), "tower": ("tower", "towers", "chimney", "chimneys"),
}
_OBJECT_OF = {w: canon for canon, words in OBJECTS.items() for w in words}

# IR-cue families of the IR-cue QA instruction: intensity, contrast, bright, dark/low-texture, outline.
CUE_FAMILIES: dict[str, frozenset[str]] = {
    "intensity": frozenset("grayscale greyscale gray grey intensity intensities tone tones tonal luminance".split()),
    "contrast": frozenset("contrast contrasting contrasted".split()),
    "bright": frozenset("bright brighter brightest brightness glow glowing highlighted highlights".split()),
    "dark": frozenset("dark darker darkest darkness low-texture textureless texture textured smooth uniform "
                      "shadow shadows".split()),
    "outline": frozenset("outline outlines outlined edge edges silhouette structural".split()),
}
_CLAUSE_SPLIT = re.compile(r"[;:,]|\.\s+|\s+and\s+|\s+with\s+|\s+while\s+|\s+where\s+")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", (text or "").lower())


def scene_label(class_name: str | None, caption: str) -> str | None:
    """The source's class name (underscores as spaces), else the first SCENES entry the caption names."""
    if class_name:
        return canonical_scene(class_name.replace("_", " "))
    text = " " + " ".join(words(caption)) + " "
    for label, keys in SCENES:
        if any(f" {k} " in text or f" {k}s " in text for k in keys):
            return label
    return None


def canonical_scene(label: str) -> str:
    norm = " ".join(words(label))
    norm = SCENE_SYNONYMS.get(norm, norm)
    return SCENE_SYNONYMS.get(norm.removesuffix(" area"), norm)


def objects_in(text: str) -> list[str]:
    """Canonical object terms named in a text, in order of first mention, without repeats."""
    out: list[str] = []
    for w in words(text):
        c = _OBJECT_OF.get(w)
        if c and c not in out:
            out.append(c)
    return out


def cue_phrases(ir_caption: str) -> list[str]:
    """Clauses of an IR-aware caption that carry an IR cue word (the IR-cue QA answer)."""
    out: list[str] = []
    clauses, pending = [], ""
    for part in _CLAUSE_SPLIT.split(ir_caption or ""):
        part = part.strip(" ,.")
        if len(part.split()) == 1:  # "dark, low-texture regions": a lone adjective joins the next part
            pending = f"{pending}{part}, "
            continue
        clauses.append(pending + part)
        pending = ""
    for clause in clauses:
        if clause and set(words(clause)) & IR_CUE_WORDS and clause.lower() not in (c.lower() for c in out):
            out.append(clause[:1].lower() + clause[1:])
    return out


def cue_families(text: str) -> set[str]:
    ws = set(words(text))
    ws |= {p for w in ws if "-" in w for p in w.split("-")}
    return {f for f, vocab in CUE_FAMILIES.items() if ws & vocab}


def responses(row: dict, setting: str) -> dict[str, str | None]:
    """The response of each task for one triplet row under A-original or B-iraware."""
    original, ir_aware = row.get("caption") or "", row.get("ir_aware_caption") or ""
    text = original if setting == "A-original" else ir_aware
    objs = objects_in(text)
    cues = cue_phrases(ir_aware) if setting == "B-iraware" else []
    return {"caption": text or None, "scene": scene_label(row.get("class_name"), original),
            "object": ", ".join(objs) if objs else None, "ir_cue": "; ".join(cues) if cues else None}


def instruction_rows(batch: dict, setting: str, tasks: tuple[str, ...] = TASKS, inputs: str = "ir") -> dict:
    """Triplet batch (columns) → instruction rows (columns), for Ray Data's flat expansion.
    Image columns pass through when present (absent when only counting rows)."""
    parts = ("A-original", "B-iraware") if setting == "C-mixed" else (setting,)
    texts = instruction_texts(inputs)
    keys = ["sample_id", "source", "setting", "task", "instruction", "response"]
    keys += [k for k in ("rgb_jpeg", "ir_jpeg") if k in batch]
    cols: dict[str, list] = {k: [] for k in keys}
    n = len(batch["sample_id"])
    for i in range(n):
        row = {k: batch[k][i] for k in ("caption", "ir_aware_caption", "class_name")}
        for part in parts:
            for task, resp in responses(row, part).items():
                if task not in tasks or resp is None:
                    continue
                cols["sample_id"].append(batch["sample_id"][i])
                cols["source"].append(batch["source"][i])
                cols["setting"].append(part)
                cols["task"].append(task)
                cols["instruction"].append(texts[task])
                cols["response"].append(resp)
                for k in ("rgb_jpeg", "ir_jpeg"):
                    if k in cols:
                        cols[k].append(batch[k][i])
    return cols

