"""DiffV2IR speed levers (translate.compile, channels_last, attention, fp8) on the tiny random model.

What a CPU can check: the levers that only change kernels give the same images as the plain
model for the same seeds; a compiled UNet is traced once per image size (calls are padded to
translate.batch_size); fp8 refuses clearly where it cannot run; and the stage identity is the one
the code had before the levers existed unless fp8 is on. Inductor's speed and numerics, CUDA
graphs and FP8 itself need the GPU script (bench/gpu_ray.sh, bench/translate_gpu.py).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fusionrs.build.translate.diffv2ir.convert import convert_checkpoint
from fusionrs.build.translate.diffv2ir.pipeline import (
    DiffV2IRPipeline,
    Fp8Unavailable,
    Levers,
    SamplingConfig,
    fit,
    sample_seed,
)
from fusionrs.build.translate.diffv2ir.translator import DiffV2IRTranslator, identity
from fusionrs.config import load_config
from fusionrs.config.build import TranslateConfig
from fusionrs.config.loader import ConfigError, stable_hash
from fusionrs.core.images import encode_jpeg
from fusionrs.core.storage import Storage
from fusionrs.dev.sample import draw_scene
from fusionrs.dev.tiny_diffv2ir import write_tiny_checkpoint

SC = SamplingConfig(steps=2)
WHITE = Image.new("RGB", (64, 64), (255, 255, 255))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-levers")
    convert_checkpoint(write_tiny_checkpoint(d, seed=0), d / "converted")
    return d / "converted"


def images(n):
    return [fit(draw_scene(c, np.random.default_rng(i)), (64, 64)) for i, c in zip(range(n), ["farmland", "port", "river"])]


def translate(pipe, n=2):
    prompts = [f"turn the visible image of scene {i} into infrared" for i in range(n)]
    out = pipe(images(n), prompts, [sample_seed(1234, f"s{i}") for i in range(n)], [WHITE] * n, SC)
    return [np.asarray(x, np.int16) for x in out]


def max_diff(a, b):
    return max(int(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def plain(model_dir):
    return translate(DiffV2IRPipeline.from_pretrained(model_dir))


def test_channels_last_gives_the_same_images(model_dir, plain):
    pipe = DiffV2IRPipeline.from_pretrained(model_dir)
    pipe.apply_levers(Levers(channels_last=True), batch_size=2)
    convs = [m.weight for m in pipe.unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    # (1×1 kernels are both layouts at once: only the 3×3 ones tell)
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    out = translate(pipe)
    assert max_diff(out, plain) <= 1  # the same function; the NHWC kernels round differently
    assert max_diff(out[:1], out[1:]) > 5  # and the two samples differ: the comparison is not vacuous


def test_attention_kernel_is_explicit_and_both_agree(model_dir, plain):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe = DiffV2IRPipeline.from_pretrained(model_dir)
    pipe.apply_levers(Levers(attention="math"), batch_size=2)
    for m in (pipe.unet, pipe.vae):  # the VAE's mid-block attention too
        assert {type(p) for p in m.attn_processors.values()} == {AttnProcessor}
    math_out = translate(pipe)
    pipe.apply_levers(Levers(attention="sdpa"), batch_size=2)
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert max_diff(math_out, plain) <= 1 and max_diff(translate(pipe), plain) <= 1


def rows(sizes):
    rgb = [encode_jpeg(draw_scene("lake", np.random.default_rng(i)).resize(s)) for i, s in enumerate(sizes)]
    return {"sample_id": [f"r{i}" for i in range(len(sizes))], "rgb_jpeg": rgb, "caption": ["a lake"] * len(sizes)}


def pixels(out):
    return [np.asarray(Image.open(io.BytesIO(b)), np.int16) for b in out["ir_jpeg"]]


def test_compiled_unet_sees_one_batch_size_and_matches_eager(model_dir):
    """Through the translator: 3 rows of one output size with batch_size 2 make a call of 2 and a
    call of 1; the second is padded, so torch.compile (dynamic=False) traces the UNet once. The
    backend records what it was given and runs the traced graph as it is (inductor would spend
    minutes compiling C++ on 2 cores; the GPU script measures inductor itself)."""
    unet_inputs = []

    def recording_backend(gm, example_inputs):
        # the UNet's 12-channel latent input (its parameters are graph inputs too: conv_in's weight has 12 channels)
        unet_inputs.extend(tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)
                           and not isinstance(t, torch.nn.Parameter) and t.ndim == 4 and t.shape[1] == 12)
        return gm.forward

    base = dict(backend="diffv2ir", model=str(model_dir), resolution=64, steps=1, batch_size=2, jpeg_quality=100)
    sizes = [(256, 256), (320, 256), (256, 256)]  # all three become 64×64 (upstream geometry)
    torch._dynamo.reset()
    compiled = DiffV2IRTranslator(TranslateConfig(**base, compile="default"), Storage(), compile_backend=recording_backend)
    got = compiled(rows(sizes))
    want = DiffV2IRTranslator(TranslateConfig(**base), Storage())(rows(sizes))
    assert got["ir_status"] == want["ir_status"] == ["ok"] * 3
    assert set(unet_inputs) == {(8, 12, 8, 8)}  # 4 branches × 2 images, 64 px → 8×8 latents, traced once
    # The first call has the same 2 rows either way: the traced graph computes them exactly.
    assert got["ir_jpeg"][:2] == want["ir_jpeg"][:2]
    # The third ran padded (batch 2) against alone (batch 1): rounding, through JPEG at quality 100.
    assert max_diff(pixels(got)[2:], pixels(want)[2:]) <= 3
    assert compiled.runtime()["compile"] == "default" and "compile" not in DiffV2IRTranslator(
        TranslateConfig(**base), Storage()).runtime()


def test_padding_is_dropped_and_does_not_change_the_samples(model_dir, plain):
    pipe = DiffV2IRPipeline.from_pretrained(model_dir)
    pipe.pad_to = 3
    out = translate(pipe)
    assert len(out) == 2 and max_diff(out, plain) <= 1


def fp8_gpu_present() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


@pytest.mark.skipif(fp8_gpu_present(), reason="this machine has an FP8-capable GPU")
def test_fp8_without_an_fp8_gpu_fails_with_the_reason(model_dir):
    msg = r"translate\.fp8=true needs an FP8-capable CUDA GPU .*this process has no CUDA GPU.*translate\.fp8=false"
    with pytest.raises(Fp8Unavailable, match=msg):  # in the actor's constructor: before any part is read
        DiffV2IRTranslator(TranslateConfig(backend="diffv2ir", model=str(model_dir), fp8=True), Storage())
    pipe = DiffV2IRPipeline.from_pretrained(model_dir)
    unet = pipe.unet
    with pytest.raises(Fp8Unavailable, match=msg):
        pipe.apply_levers(Levers(fp8=True, compile="default"), batch_size=2)
    assert pipe.unet is unet and pipe.pad_to == 0  # refused before anything was changed


# Written by the code before the levers existed (identity() at b26ae20, 2026-11-30) for these
# configs and this model metadata: outputs made then must keep their fingerprints.
META = {"model_id": "0123456789abcdef", "source_sha256": "a" * 64}
GOLDEN = {(): "6275b9202e4ae4fe", (("dtype", "bfloat16"), ("steps", 30)): "c4acacdd9914ed1f"}


@pytest.mark.parametrize("levers", [{}, {"compile": True}, {"compile": "max-autotune", "channels_last": True},
                                    {"compile": "reduce-overhead", "attention": "math"}])
def test_identity_is_unchanged_by_rounding_levers_and_changed_by_fp8(levers):
    for fixed, want in GOLDEN.items():
        cfg = TranslateConfig(backend="diffv2ir", model="m", **dict(fixed), **levers)
        assert stable_hash(identity(cfg, META)) == want
        fp8 = identity(TranslateConfig(backend="diffv2ir", model="m", **dict(fixed), **levers, fp8=True), META)
        assert stable_hash(fp8) != want and "fp8" in fp8


BUILD = ["output=/tmp/unused", "sources=[{name: A, format: rs5m_wds, root: /tmp/unused-src}]"]


@pytest.mark.parametrize("value,mode", [("false", "off"), ("off", "off"), ("true", "default"), ("default", "default"),
                                        ("reduce-overhead", "reduce-overhead"), ("max-autotune", "max-autotune")])
def test_compile_key_keeps_true_false_and_takes_modes(value, mode):
    assert load_config(None, [*BUILD, f"translate.compile={value}"]).translate.compile_mode() == mode


@pytest.mark.parametrize("overrides,match", [
    (["translate.compile=fast"], r"translate\.compile: 'fast' is not one of off, default"),
    (["translate.attention=flash"], r"translate\.attention: 'flash'"),
    (["translate.fp8=true", "translate.dtype=float16"], r"translate\.fp8: needs translate\.dtype auto or bfloat16"),
])
def test_bad_lever_values_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [*BUILD, *overrides])


def test_rows_prepared_in_a_thread_while_the_sampler_runs_give_the_same_ir(model_dir):
    """How TranslatePart can hide JPEG decoding behind the UNet: prepare (CPU, never loads the
    model) the next rows in a thread while run samples these. Same bytes as plain calls."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = TranslateConfig(backend="diffv2ir", model=str(model_dir), resolution=64, steps=1, batch_size=2)
    windows = [rows([(256, 256), (320, 256)]), {**rows([(256, 256)]), "rgb_jpeg": [b"not a jpeg"]}]
    overlapped = DiffV2IRTranslator(cfg, Storage())
    first = overlapped.prepare(windows[0])
    assert overlapped.pipe is None and first.groups == {(64, 64): [0, 1]}
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(overlapped.prepare, windows[1])
        got = [overlapped.run(first), overlapped.run(second.result())]
    plain = DiffV2IRTranslator(cfg, Storage())
    want = [plain(w) for w in windows]
    statuses = [["ok", "ok"], ["translate_error:UnidentifiedImageError"]]
    assert [g["ir_status"] for g in got] == [w["ir_status"] for w in want] == statuses
    assert got[0]["ir_jpeg"] == want[0]["ir_jpeg"]
