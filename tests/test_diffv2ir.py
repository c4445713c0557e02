"""DiffV2IR on diffusers, with the tiny random model in the real LDM on-disk format."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionrs.build.translate.diffv2ir.convert import ConvertError, convert_checkpoint, file_sha256
from fusionrs.build.translate.diffv2ir.pipeline import (
    DiffV2IRPipeline,
    KarrasSchedule,
    SamplingConfig,
    fit,
    guide,
    sample_seed,
    upstream_size,
)
from fusionrs.dev.sample import draw_scene
from fusionrs.dev.tiny_diffv2ir import build_tiny_components, write_tiny_checkpoint
from tests.conftest import sample_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    ckpt = write_tiny_checkpoint(d, seed=0)
    conv = d / "converted"
    convert_checkpoint(ckpt, conv)
    return ckpt, conv


@pytest.fixture(scope="module")
def pipe(tiny):
    return DiffV2IRPipeline.from_pretrained(tiny[1])


def images(n, size=(64, 64)):
    return [fit(draw_scene(c, np.random.default_rng(i)), size) for i, c in zip(range(n), ["farmland", "river", "port", "forest"] * 3)]


WHITE = Image.new("RGB", (64, 64), (255, 255, 255))
SC = SamplingConfig(steps=3)


def run(p, idx, sc=SC):
    imgs = images(4)
    return p([imgs[i] for i in idx], [f"turn the visible image of scene {i} into infrared" for i in idx],
             [sample_seed(1234, f"s{i}") for i in idx], [WHITE] * len(idx), sc)


def test_ldm_key_mapping_round_trips_through_diffusers():
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    from fusionrs.build.translate.diffv2ir.ldm_keys import unet_to_ldm, vae_to_ldm

    cfg, unet, vae, _ = build_tiny_components(3)
    usd, vsd = unet.state_dict(), vae.state_dict()
    u = convert_ldm_unet_checkpoint({f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(usd).items()},
                                    create_unet_diffusers_config_from_ldm(cfg, {}))
    v = convert_ldm_vae_checkpoint({f"first_stage_model.{k}": x for k, x in vae_to_ldm(vsd).items()},
                                   create_vae_diffusers_config_from_ldm(cfg, {}))
    assert set(u) == set(usd) and all(torch.equal(u[k], usd[k]) for k in usd)
    assert set(v) == set(vsd) and all(torch.equal(v[k].reshape(vsd[k].shape), vsd[k]) for k in vsd)


def test_guidance_x0_and_eps_space_agree():
    g = torch.Generator().manual_seed(0)
    b, x, sigma = 3, torch.randn(3, 4, 8, 8, generator=g), torch.tensor(2.5)
    eps = torch.randn(4 * b, 4, 8, 8, generator=g)
    d = torch.cat([x] * 4) - sigma * eps
    s = (7.5, 1.5, 1.5)
    d0, d1, d2, d3 = d[:b], d[b:2 * b], d[2 * b:3 * b], d[3 * b:]
    reference = d3 + s[0] * (d0 - d1) + s[1] * (d1 - d2) + s[2] * (d2 - d3)
    assert torch.allclose(guide(d, b, *s), reference)
    assert torch.allclose(guide(d, b, *s), x - sigma * guide(eps, b, *s), atol=1e-4)  # coefficients sum to 1


def test_schedule_matches_k_diffusion():
    ks = KarrasSchedule()
    sig = ks.get_sigmas(100)
    assert len(sig) == 101 and sig[-1] == 0
    assert sig[0].item() == pytest.approx(14.6146, abs=1e-3) and sig[-2].item() == pytest.approx(0.02917, abs=1e-4)
    t = torch.tensor([999.0, 500.5, 10.25, 0.0])
    assert torch.allclose(ks.sigma_to_t(ks.t_to_sigma(t)), t, atol=1e-3)


def test_schedule_follows_sigma_device():
    # The schedule table lives on the CPU; on a GPU σ does not. The meta device stands in for
    # CUDA here (no GPU in CI): mixing it with a CPU tensor fails the same way. Found on an H200.
    t = KarrasSchedule().sigma_to_t(torch.tensor([1.0, 2.0], device="meta"))
    assert t.device.type == "meta" and t.shape == (2,)


def test_upstream_geometry():
    assert upstream_size(640, 512, 512) == (512, 448)
    assert upstream_size(512, 512, 512) == (512, 512)
    assert upstream_size(224, 224, 512) == (512, 512)
    assert upstream_size(1000, 300, 512) == (640, 192)  # short side rounded up: the long side grows too


def test_branch_layout(pipe):
    seen = {}

    def hook(module, args, kwargs):
        seen["x"], seen["ctx"] = args[0].detach().clone(), kwargs["encoder_hidden_states"].detach().clone()

    h = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run(pipe, [0, 1], SamplingConfig(steps=1))
    finally:
        h.remove()
    x, ctx, b = seen["x"], seen["ctx"], 2
    assert x.shape[:2] == (4 * b, 12)
    img, seg = x[:, 4:8], x[:, 8:12]
    assert img[:2 * b].abs().sum() > 0 and img[2 * b:].abs().sum() == 0  # image latent: rows 0-1 only
    assert seg[:3 * b].abs().sum() > 0 and seg[3 * b:].abs().sum() == 0  # seg latent: all but the last
    null = pipe.null_text()
    assert not torch.allclose(ctx[0], null[0]) and all(torch.allclose(ctx[i], null[0]) for i in range(b, 4 * b))
    assert torch.equal(x[:b, :4], x[b:2 * b, :4])  # the same noisy latent in every branch


def test_per_sample_output_does_not_depend_on_batch(pipe):
    together = run(pipe, [0, 1, 2])
    alone = run(pipe, [1])
    reordered = run(pipe, [2, 1])
    a = np.asarray(together[1], np.int16)
    assert np.abs(a - np.asarray(alone[0], np.int16)).max() <= 1
    assert np.abs(a - np.asarray(reordered[1], np.int16)).max() <= 1
    assert np.abs(a - np.asarray(together[0], np.int16)).max() > 5  # different samples differ


def test_converted_checkpoint_equals_direct_diffusers_assembly(tiny, pipe):
    from transformers import CLIPTokenizer

    _, unet, vae, text = build_tiny_components(0)
    direct = DiffV2IRPipeline(unet, vae, text, CLIPTokenizer.from_pretrained(tiny[1] / "tokenizer"))
    a, b = run(pipe, [0, 3]), run(direct, [0, 3])
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    # The converter took the EMA UNet: the training weights give another picture.
    import safetensors.torch

    sd = torch.load(tiny[0], weights_only=True)["state_dict"]
    assert any("model_ema." in k for k in sd)
    conv_unet = safetensors.torch.load_file(str(tiny[1] / "unet" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(conv_unet["conv_in.weight"], unet.state_dict()["conv_in.weight"])
    assert not torch.equal(conv_unet["conv_in.weight"], sd["model.diffusion_model.input_blocks.0.0.weight"])


def test_tokenizer_matches_open_clip(tiny):
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    hf = CLIPTokenizer.from_pretrained(tiny[1] / "tokenizer")
    text = "turn the visible image of many buildings, a river & 3 bridges into infrared"
    ids = hf(text).input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and ids[1:-1] == SimpleTokenizer().encode(text)


def test_converter_refuses_missing_ema_wrong_hash_and_pickles(tiny, tmp_path):
    ckpt, _ = tiny
    with pytest.raises(ConvertError, match="SHA-256"):
        convert_checkpoint(ckpt, tmp_path / "x", sha256="0" * 64)
    assert convert_checkpoint(ckpt, tmp_path / "ok", sha256=file_sha256(ckpt))["source_sha256"] == file_sha256(ckpt)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    no_ema = {k: v for k, v in sd.items() if not k.startswith("model_ema.")}
    torch.save({"state_dict": no_ema}, tmp_path / "noema.ckpt")
    with pytest.raises(ConvertError, match="no EMA"):
        convert_checkpoint(tmp_path / "noema.ckpt", tmp_path / "y", original_config=ckpt.with_suffix(".yaml"))
    torch.save({"state_dict": sd, "callback": Path("/tmp")}, tmp_path / "pickled.ckpt")  # an arbitrary object
    with pytest.raises(ConvertError, match="refusing"):
        convert_checkpoint(tmp_path / "pickled.ckpt", tmp_path / "z")


def test_translator_rows_and_s3_model(tiny, s3_server, monkeypatch):
    import boto3

    from fusionrs.build.translate.diffv2ir.translator import DiffV2IRTranslator
    from fusionrs.config.build import TranslateConfig
    from fusionrs.core.images import encode_jpeg
    from fusionrs.core.storage import Storage

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    for f in tiny[1].rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), "models", "tiny/" + f.relative_to(tiny[1]).as_posix())
    cache = Path(tiny[1]).parent / "cache"
    monkeypatch.setenv("FUSIONRS_MODEL_CACHE", str(cache))  # this test's own cache, undone after it
    cfg = TranslateConfig(backend="diffv2ir", model="s3://models/tiny", resolution=64, steps=2, batch_size=2)
    t = DiffV2IRTranslator(cfg, Storage(s3_endpoint=s3_server))
    rgb = [encode_jpeg(draw_scene("lake", np.random.default_rng(i)).resize(s)) for i, s in enumerate([(256, 256), (320, 256), (256, 256)])]
    out = t({"sample_id": ["a", "b", "c"], "rgb_jpeg": rgb, "caption": ["a lake", "a lake", "a lake"]})
    assert out["ir_status"] == ["ok"] * 3
    sizes = [Image.open(io.BytesIO(x)).size for x in out["ir_jpeg"]]
    assert sizes == [(64, 64)] * 3 and upstream_size(320, 256, 64) == (64, 64)
    assert all(Image.open(io.BytesIO(x)).mode == "RGB" for x in out["ir_jpeg"])
    assert t.identity()["model_id"] and any(cache.rglob("*.safetensors"))
    bad = t({"sample_id": ["d"], "rgb_jpeg": [b"not a jpeg"], "caption": ["x"]})
    assert bad["ir_status"][0].startswith("translate_error") and bad["ir_jpeg"] == [None]


@pytest.mark.slow
def test_build_with_tiny_diffv2ir(ray_local, sample_sources, tiny, tmp_path):
    import pyarrow.dataset as pads

    from fusionrs.build.pipeline import build
    out = tmp_path / "out"
    cfg = sample_config(sample_sources, *[
        f"output={out}", "translate.backend=diffv2ir", f"translate.model={tiny[1]}", "translate.resolution=64",
        "translate.steps=2", "translate.batch_size=8"])
    m = build(cfg)
    assert m["translator"]["backend"] == "diffv2ir" and m["translator"]["model_id"]
    rows = pads.dataset(str(out / "triplets"), format="parquet").to_table(columns=["ir_jpeg", "ir_status"]).to_pylist()
    assert rows and all(r["ir_status"] == "ok" for r in rows)
    assert all(Image.open(io.BytesIO(r["ir_jpeg"])).mode == "RGB" for r in rows[:10])
    assert m["counts"]["triplets"] == len(rows)


@pytest.mark.slow
def test_gpu_benchmark_script_runs_on_cpu(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "table.md"
    p = subprocess.run([sys.executable, str(repo / "bench" / "translate_gpu.py"), "--tiny", "--batches", "1", "2",
                        "--images", "2", "--out", str(out)], capture_output=True, text=True, timeout=300,
                       cwd=repo, env={**__import__("os").environ, "PYTHONPATH": str(repo)})
    assert p.returncode == 0, p.stderr[-3000:]
    table = out.read_text()
    assert "| batched | fp32 | off | 2 |" in table and "reference-equivalent" in table


def test_sam_seg_map_and_blip_prompt_with_tiny_models(tiny, tmp_path):
    from fusionrs.build.translate.diffv2ir.blip import BlipCaptioner
    from fusionrs.build.translate.diffv2ir.sam import load_sam, sam_union_mask
    from fusionrs.build.translate.diffv2ir.translator import DiffV2IRTranslator
    from fusionrs.config.build import TranslateConfig
    from fusionrs.core.images import encode_jpeg
    from fusionrs.core.storage import Storage
    from fusionrs.dev.tiny_diffv2ir import write_tiny_blip, write_tiny_sam

    sam_dir, blip_dir = write_tiny_sam(tmp_path / "sam"), write_tiny_blip(tmp_path / "blip")
    img = draw_scene("port", np.random.default_rng(3)).resize((96, 80))
    # SAM: the union of the generator's masks, white on black, the image's size. Thresholds at 0
    # keep the random model's masks, so the union is not trivially empty.
    gen = load_sam(sam_dir)
    loose = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    union = np.asarray(sam_union_mask(gen, img, points_per_batch=16, **loose))
    masks = gen(img, points_per_batch=16, **loose)["masks"]
    want = np.zeros((80, 96), bool)
    for m in masks:
        want |= np.asarray(m, bool)
    assert union.shape == (80, 96, 3) and set(np.unique(union)) <= {0, 255} and masks
    assert (union[..., 0] == 255).sum() > 0 and np.array_equal(union[..., 0] == 255, want)
    # BLIP: greedy captions do not depend on the batch.
    blip = BlipCaptioner(blip_dir, max_new_tokens=8)
    imgs = [img, draw_scene("river", np.random.default_rng(4)).resize((64, 64))]
    assert blip(imgs) == blip(imgs[:1]) + blip(imgs[1:]) and all(blip(imgs))
    # Through the translator: seg=sam + a BLIP prompt translate, and the prompt reaches the UNet.
    rows = {"sample_id": ["a", "b"], "rgb_jpeg": [encode_jpeg(i) for i in imgs], "caption": ["a port", "a river"]}
    base = dict(backend="diffv2ir", model=str(tiny[1]), resolution=64, steps=2, batch_size=2, seg="sam", sam_model=sam_dir)
    with_caption = DiffV2IRTranslator(TranslateConfig(**base), Storage())
    with_blip = DiffV2IRTranslator(TranslateConfig(**base, prompt_caption="blip", blip_model=blip_dir), Storage())
    a, b = with_caption(dict(rows)), with_blip(dict(rows))
    assert a["ir_status"] == b["ir_status"] == ["ok", "ok"]
    assert a["ir_jpeg"] != b["ir_jpeg"]
    assert "blip_model" in with_blip.identity() and "blip_model" not in with_caption.identity()


def test_stage_fingerprints_do_not_depend_on_the_drivers_hardware(tiny, tmp_path, monkeypatch):
    """dtype=auto is recorded as the rule: a CPU head and a GPU head compute the same translate
    and caption fingerprints (a GPU driver used to record bf16 and re-translate everything)."""
    from fusionrs.build.fingerprints import stage_fingerprints
    from fusionrs.config import load_config
    from fusionrs.core.storage import Storage

    cfg = load_config(None, [f"output={tmp_path / 'out'}", f"sources=[{{name: A, format: rs5m_wds, root: {tmp_path}/src}}]",
                             "translate.backend=diffv2ir", f"translate.model={tiny[1]}", "caption.backend=openai"])
    prints = {}
    for cuda in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        prints[cuda] = stage_fingerprints(cfg, Storage())
    assert prints[False] == prints[True]
    cfg.translate.dtype = "bfloat16"  # an explicit dtype is part of the identity
    assert stage_fingerprints(cfg, Storage())["translate"] != prints[False]["translate"]
