import io

import numpy as np
import pytest
from PIL import Image

from fusionrs.build.caption.cues import CueCaptioner, measure_cues
from fusionrs.build.caption.ir_filter import STRICT_V3_PATTERNS, ir_caption_reasons, ir_caption_status
from fusionrs.build.translate.pseudo_ir import PseudoIRTranslator
from fusionrs.build.translate.validate import IR_BLANK, validate_ir_jpeg
from fusionrs.config.build import IRFilterConfig, TranslateConfig
from fusionrs.dev.sample import CLASSES, draw_scene, jpeg

F = IRFilterConfig()


def batch(n=4):
    return {"sample_id": [f"s{i}" for i in range(n)],
            "rgb_jpeg": [jpeg(draw_scene(CLASSES[i % len(CLASSES)], np.random.default_rng(i))) for i in range(n)]}


def test_pseudo_ir_output_is_validated_rgb_jpeg_and_deterministic():
    t = PseudoIRTranslator(TranslateConfig(resolution=128))
    out = t(batch())
    assert out["ir_status"] == ["ok"] * 4
    for data in out["ir_jpeg"]:
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (128, 128)
    assert t(batch())["ir_jpeg"] == out["ir_jpeg"]


def test_pseudo_ir_makes_vegetation_bright_and_water_dark():
    rgb = np.zeros((64, 128, 3), np.uint8)
    rgb[:, :64] = (40, 140, 40)  # vegetation
    rgb[:, 64:] = (30, 60, 150)  # water
    out = PseudoIRTranslator(TranslateConfig(resolution=64))({"sample_id": ["x"], "rgb_jpeg": [jpeg(Image.fromarray(rgb))]})
    ir = np.asarray(Image.open(io.BytesIO(out["ir_jpeg"][0])).convert("L"), np.float32)
    # Centre crop of 128x64 → 64x64 keeps columns 32..96: left half vegetation, right half water.
    assert ir[:, 5:25].mean() > ir[:, 40:60].mean() + 60


def test_bad_rgb_bytes_give_a_reason_per_row():
    b = batch(2)
    b["rgb_jpeg"][1] = b"garbage"
    out = PseudoIRTranslator(TranslateConfig(resolution=64))(b)
    assert out["ir_status"][0] == "ok" and out["ir_status"][1].startswith("translate_error")
    assert out["ir_jpeg"][1] is None


def test_blank_translation_is_invalid():
    assert validate_ir_jpeg(jpeg(Image.new("RGB", (64, 64), (128, 128, 128))), 64) == IR_BLANK
    assert validate_ir_jpeg(None, 64) != "ok"


def test_cue_captions_pass_the_filter_and_drop_colours():
    ir = PseudoIRTranslator(TranslateConfig(resolution=128))(batch(6))
    caps = CueCaptioner()({**ir, "caption": ["green trees and a blue lake near red houses"] * 6})
    for c in caps["ir_aware_caption"]:
        assert ir_caption_status(c, "green trees and a blue lake near red houses", F) == "accepted", c
        assert "green" not in c and "blue" not in c


def test_cues_measure_where_bright_regions_are():
    a = np.zeros((90, 90), np.uint8)
    a[:30, 60:] = 255
    c = measure_cues(Image.fromarray(a).convert("RGB"))
    assert c["bright_region"] == "in the upper right" and c["dark_fraction"] > 0.8


@pytest.mark.parametrize("caption,code", [
    ("the runway shows a strong thermal signature against dark grass with high contrast", "thermal_signature"),
    ("roofs are heated and appear bright with sharp outlines and dark roads", "heat"),
    ("hot roofs appear bright while the cold water is dark with low texture", "temperature"),
    ("the surface emissivity makes bright roofs and dark water with clear outlines", "emissivity_radiance"),
    ("reflective roofs look bright next to dark low-texture water with sharp edges", "reflectivity"),
    ("metallic roofs are bright against the dark grayscale field with clear outlines", "material_property"),
    ("red roofs appear bright next to dark water with high contrast outlines", "rgb_color"),
])
def test_strict_v3_categories(caption, code):
    assert code in ir_caption_reasons(caption, "", F)


def test_warm_up_is_not_a_temperature_claim():
    assert not STRICT_V3_PATTERNS[2][1].search("a warm-up track")
    assert STRICT_V3_PATTERNS[2][1].search("warmer areas")


def test_length_repeat_and_weak_cue_rules():
    orig = "many buildings are near a river with some trees"
    assert "too_short" in ir_caption_reasons("bright river", orig, F)
    assert ir_caption_reasons("many buildings are near a river with some trees", orig, F) == ["repeats_original_without_ir_cues"]
    assert ir_caption_reasons("many buildings stand near a river and some trees grow there nearby", orig, F) == ["weak_ir_cues"]
    ok = "many buildings near a river appear bright with sharp outlines while the water is dark and low in texture"
    assert ir_caption_status(ok, orig, F) == "accepted"
    assert ir_caption_status("", orig, F) == "filtered:empty"
