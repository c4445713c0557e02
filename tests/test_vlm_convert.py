"""Original-LLaVA checkpoints → Hugging Face LLaVA (`fusionrs convert-llava`), and BLIP-2 (OPT).

Tiny GeoChat- and H2RSVLM-layout checkpoints (fusionrs/dev/tiny_llava_original.py) are converted,
then checked against references written here: the same weights assembled by hand in
LlavaForConditionalGeneration, LLaVA's own forward (CLIP hidden state → projector → spliced
embeddings → Llama), LLaVA's tokenization (SentencePiece BPE per chunk around the image),
GeoChat's bicubic grid, LLaVA's expand2square; then LoRA trains and generates through our chat
code. CPU, about half a minute:

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_vlm_convert.py
"""

import hashlib
import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoProcessor,
    Blip2Config,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    T5Config,
)
from transformers.convert_slow_tokenizer import import_protobuf

from fusionrs.dev.tiny_llava_original import write_tiny_geochat, write_tiny_h2rsvlm
from fusionrs.dev.tiny_vlm import write_tiny_blip2_opt
from fusionrs.train.vlm.chat import IGNORE, collate, encode_example
from fusionrs.train.vlm.convert_llava import ConvertError, convert_llava, main
from fusionrs.train.vlm.instructions import INSTRUCTIONS
from fusionrs.train.vlm.model import add_lora, load_model, load_processor, lora_modules
from tests.vlm_checks import generates_a_batch, lora_steps_lower_the_loss

KINDS = ["geochat", "h2rsvlm"]
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("originals")
    return {"geochat": write_tiny_geochat(root / "geochat"), "h2rsvlm": write_tiny_h2rsvlm(root / "h2rsvlm")}


@pytest.fixture(scope="module")
def converted(tiny_originals, tmp_path_factory):
    """Each kind converted once: GeoChat names its tower by a Hub id (passed here), H2RSVLM by path."""
    out = {}
    for kind, paths in tiny_originals.items():
        dest = tmp_path_factory.mktemp(kind) / "hf"
        tower = paths["vision_tower"] if kind == "geochat" else None
        summary = convert_llava(paths["checkpoint"], str(dest), vision_tower=tower)
        out[kind] = dict(paths, out=str(dest), summary=summary)
    return out


def noise_image(h: int, w: int, seed: int = 0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8)).convert("RGB")


def original_state_dict(ckpt: Path) -> dict:
    files = set(json.loads(next(ckpt.glob("*.index.json")).read_text())["weight_map"].values())
    sd = {}
    for f in files:
        sd.update(load_file(ckpt / f) if f.endswith(".safetensors") else torch.load(ckpt / f, weights_only=True))
    return sd


def original_tower(tower: Path) -> dict:
    sd = torch.load(tower / "pytorch_model.bin", weights_only=True)
    return {k[len("vision_model."):]: v for k, v in sd.items() if k.startswith("vision_model.")}


def bicubic_grid(pos: torch.Tensor, side: int) -> torch.Tensor:
    n = int((pos.shape[0] - 1) ** 0.5)
    grid = pos[1:].T.reshape(1, pos.shape[1], n, n)
    grid = torch.nn.functional.interpolate(grid, size=side, mode="bicubic", align_corners=True)
    return torch.cat([pos[:1], grid.reshape(pos.shape[1], side * side).T])


def assemble_directly(kind: str, ckpt: Path, tower: Path, converted_model) -> LlavaForConditionalGeneration:
    """The original weights mapped by hand into LlavaForConditionalGeneration (this transformers'
    module names). Rows past the original vocabulary are the converter's draws, copied: they are
    checked in test_added_tokens_and_rows_follow_the_hf_script."""
    cfg = json.loads((ckpt / "config.json").read_text())
    vision = CLIPVisionConfig.from_pretrained(tower)
    vision.image_size = 504 if kind == "geochat" else vision.image_size
    text = LlamaConfig(vocab_size=converted_model.config.text_config.vocab_size, tie_word_embeddings=False,
                       **{k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "rms_norm_eps")})
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=cfg["vocab_size"],
                         vision_feature_layer=cfg["mm_vision_select_layer"], vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", tie_word_embeddings=False)
    sd = original_state_dict(ckpt)
    dtype, n = sd["model.embed_tokens.weight"].dtype, sd["model.embed_tokens.weight"].shape[0]
    mapped = {}
    for key, value in sd.items():
        if key.startswith("model.mm_projector."):
            index, param = key.split(".")[2:]
            mapped[f"model.multi_modal_projector.linear_{1 if index == '0' else 2}.{param}"] = value
        elif key == "lm_head.weight":
            mapped[key] = value
        elif key.split(".")[1] in ("embed_tokens", "layers", "norm") and not key.endswith("inv_freq"):
            mapped["model.language_model." + key[len("model."):]] = value
    vision_sd = original_tower(tower)
    if kind == "geochat":
        key = "embeddings.position_embedding.weight"
        vision_sd[key] = bicubic_grid(vision_sd[key], 36)
    # The converted model keeps the checkpoint's precision (GeoChat: fp16) for the tower too.
    mapped.update({"model.vision_tower." + k: v.to(dtype) for k, v in vision_sd.items()})
    conv_sd = converted_model.state_dict()
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        mapped[key] = torch.cat([mapped[key].float(), conv_sd[key][n:]])
    model = LlavaForConditionalGeneration(config)
    model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True)
    return model.eval()


def llava_forward(model, batch: dict, image_id: int, layer: int) -> torch.Tensor:
    """LLaVA's encode_images + prepare_inputs_labels_for_multimodal: CLIP hidden state `layer`
    without the class token, through mm_projector (Linear, GELU, Linear), spliced over the image
    positions of the token embeddings, then the Llama decoder and head."""
    inner = model.model
    feats = inner.vision_tower(batch["pixel_values"], output_hidden_states=True).hidden_states[layer][:, 1:]
    feats = inner.multi_modal_projector.linear_2(torch.nn.functional.gelu(inner.multi_modal_projector.linear_1(feats)))
    embeds = inner.language_model.embed_tokens(batch["input_ids"]).clone()
    embeds[batch["input_ids"] == image_id] = feats.reshape(-1, feats.shape[-1])
    hidden = inner.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state
    return model.lm_head(hidden)


def sentencepiece_encode(pieces, text: str) -> list[int]:
    """SentencePiece BPE as the slow LlamaTokenizer runs it on one chunk: "▁" prefix, spaces as
    "▁", repeatedly merge the adjacent pair whose piece scores highest (leftmost on ties), bytes
    for what no piece covers."""
    normal = {p.piece: (i, p.score) for i, p in enumerate(pieces) if p.type == 1}
    byte = {p.piece: i for i, p in enumerate(pieces) if p.type == 6}
    symbols = list("▁" + text.replace(" ", "▁"))
    while True:
        pairs = [(normal[a + b][1], -i) for i, (a, b) in enumerate(zip(symbols, symbols[1:])) if a + b in normal]
        if not pairs:
            break
        i = -max(pairs)[1]
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    ids = []
    for s in symbols:
        ids += [normal[s][0]] if s in normal else [byte[f"<0x{b:02X}>"] for b in s.encode()]
    return ids


def llava_tokens(ckpt: Path, question: str, answer: str, image_id: int) -> list[int]:
    """LLaVA's tokenizer_image_token on conv_vicuna_v1's prompt: each chunk around "<image>"
    tokenized on its own (BOS kept once), the image a single placeholder, "</s>" the EOS id."""
    proto = import_protobuf().ModelProto()
    proto.ParseFromString((ckpt / "tokenizer.model").read_bytes())
    before, after = f"{SYSTEM} USER: ", f"\n{question} ASSISTANT: {answer}"
    pieces = proto.pieces
    return [1] + sentencepiece_encode(pieces, before) + [image_id] + sentencepiece_encode(pieces, after) + [2]


def test_convert_refuses_what_it_cannot_reproduce(tiny_originals, tmp_path):
    # GeoChat's config names its tower by a Hub id: no download, a clear request for the folder.
    with pytest.raises(ConvertError, match="--vision-tower"):
        convert_llava(tiny_originals["geochat"]["checkpoint"], str(tmp_path / "a"))
    assert main([tiny_originals["geochat"]["checkpoint"], str(tmp_path / "a")]) == 2  # the CLI: exit 2, no folder
    assert not (tmp_path / "a").exists()
    # A .bin that needs more than tensors to unpickle is refused, not executed.
    src = tmp_path / "unsafe"
    shutil.copytree(tiny_originals["h2rsvlm"]["checkpoint"], src)
    for f in list(src.glob("model*.safetensors*")):
        f.unlink()
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2), "note": Fraction(1, 3)}, src / "pytorch_model.bin")
    with pytest.raises(ConvertError, match="refusing to load pytorch_model.bin"):
        convert_llava(str(src), str(tmp_path / "b"))


@pytest.mark.parametrize("kind", KINDS)
def test_converted_logits_match_the_weights_assembled_directly(converted, kind):
    c = converted[kind]
    processor, model = load_processor(c["out"]), load_model(c["out"]).eval()
    direct = assemble_directly(kind, Path(c["checkpoint"]), Path(c["vision_tower"]), model)
    batch = collate([encode_example(processor, noise_image(40, 60), INSTRUCTIONS["caption"], "a bright runway"),
                     encode_example(processor, noise_image(48, 48, 1), INSTRUCTIONS["scene"], "an airport")],
                    processor.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(**batch).logits
        torch.testing.assert_close(logits, direct(**batch).logits, rtol=1e-5, atol=1e-5)
        layer = json.loads((Path(c["checkpoint"]) / "config.json").read_text())["mm_vision_select_layer"]
        reference = llava_forward(direct, batch, model.config.image_token_id, layer)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[mask], reference[mask], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_tokens_are_the_original_llava_tokens(converted, kind):
    c = converted[kind]
    processor = load_processor(c["out"])
    question, answer = INSTRUCTIONS["caption"], "a bright runway crosses dark fields"
    ex = encode_example(processor, noise_image(40, 60), question, answer)
    ids, image_id = ex["input_ids"].tolist(), c["summary"]["image_token_id"]
    assert ids.count(image_id) == c["summary"]["image_tokens"]
    collapsed = [t for i, t in enumerate(ids) if t != image_id or ids[i - 1] != image_id]
    assert collapsed == llava_tokens(Path(c["checkpoint"]), question, answer, image_id)
    # Assistant-only labels: the answer and </s>, nothing of the prompt or the image.
    tok = processor.tokenizer
    assert tok.decode(ex["input_ids"][ex["labels"] != IGNORE]).strip() == answer + "</s>"


def test_geochat_position_grid_is_the_bicubic_interpolation(converted):
    c = converted["geochat"]
    model = load_model(c["out"])
    native = original_tower(Path(c["vision_tower"]))["embeddings.position_embedding.weight"]
    assert native.shape[0] == 1 + 24 * 24
    pos = model.model.vision_tower.state_dict()["embeddings.position_embedding.weight"]
    assert pos.shape[0] == 1 + 36 * 36 and model.config.vision_config.image_size == 504
    # Interpolated in float32, stored in the checkpoint's fp16, loaded back as float32.
    assert torch.equal(pos, bicubic_grid(native, 36).half().float())
    assert torch.equal(pos[0], native[0].half().float())  # the class position is kept as it was
    # The copy GeoChat saved inside its checkpoint (after its own interpolation) is the same.
    assert c["summary"]["in_checkpoint_tower"]["max_abs_diff"] == 0.0
    assert c["summary"]["in_checkpoint_tower"]["compared"] == c["summary"]["in_checkpoint_tower"]["tensors"]


def test_added_tokens_and_rows_follow_the_hf_script(converted, tmp_path):
    c = converted["h2rsvlm"]
    s, tok = c["summary"], load_processor(c["out"]).tokenizer
    n = json.loads((Path(c["checkpoint"]) / "config.json").read_text())["vocab_size"]
    assert (tok.convert_tokens_to_ids("<image>"), tok.pad_token, tok.pad_token_id) == (n, "<pad>", n + 1)
    assert s["vocab_size"] == {"original": n, "tokenizer": n + 2, "model": -(-(n + 2) // 64) * 64}
    model = load_model(c["out"])
    emb = model.get_input_embeddings().weight.detach()
    old, new = emb[:n], emb[n:]
    assert new.shape[0] == s["vocab_size"]["model"] - n
    # Draws from N(mean, 1e-5·cov): every new row sits at the mean, spread sqrt(1e-5) of the rows'.
    mu = old.mean(0)
    ratio = float((new - mu).pow(2).sum(1).mean().sqrt() / (old - mu).pow(2).sum(1).mean().sqrt())
    assert 0.5 * 1e-5 ** 0.5 < ratio < 2 * 1e-5 ** 0.5
    head = model.get_output_embeddings().weight.detach()
    assert torch.equal(head[:n], original_state_dict(Path(c["checkpoint"]))["lm_head.weight"])
    spread = float((old - mu).pow(2).sum(1).mean().sqrt())
    assert float((head[n:] - mu).pow(2).sum(1).mean().sqrt()) < 2 * 1e-5 ** 0.5 * spread
    # Deterministic: converting again writes the same weights.
    again = convert_llava(c["checkpoint"], str(tmp_path / "again"))
    assert again["outputs"]["model.safetensors"] == s["outputs"]["model.safetensors"]
    # Every input file is recorded with its SHA-256.
    folders = (("", c["checkpoint"]), ("vision_tower/", c["vision_tower"]))
    sha = {f"{prefix}{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
           for prefix, folder in folders for f in Path(folder).iterdir()}
    assert again["inputs"] == s["inputs"] == sha


@pytest.mark.parametrize("kind", KINDS)
def test_processor_pads_like_llava_expand2square(converted, kind, shared_data):
    """LLaVA pads a non-square image to a square of the mean colour, then the tower's CLIP
    preprocessing; the converted processor (PIL backend, as LLaVA's) gives the same pixels."""
    image = Image.open(next((shared_data / "hit-uav-sample" / "images").glob("*.jpg"))).convert("RGB")
    assert image.size == (640, 512)
    c = converted[kind]
    pre = json.loads((Path(c["vision_tower"]) / "preprocessor_config.json").read_text())
    side = c["summary"]["image_size"]
    clip = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                 resample=pre["resample"], image_mean=pre["image_mean"], image_std=pre["image_std"])
    w, h = image.size
    square = Image.new("RGB", (max(w, h),) * 2, tuple(int(x * 255) for x in pre["image_mean"]))
    square.paste(image, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    expected = clip(square, return_tensors="pt")["pixel_values"]
    pil = AutoProcessor.from_pretrained(c["out"], backend="pil").image_processor
    got = pil(image, return_tensors="pt")["pixel_values"]
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_converted_model_trains_lora_and_generates(converted, kind):
    c = converted[kind]
    processor, model = load_processor(c["out"]), load_model(c["out"])
    targets = lora_modules(model)
    assert len(targets) == 7 * model.config.text_config.num_hidden_layers
    assert all(t.startswith("model.language_model.layers.") for t in targets)
    torch.manual_seed(0)
    lora = add_lora(model, r=8, alpha=16, dropout=0.0)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    batch = collate([encode_example(processor, noise_image(40, 60), INSTRUCTIONS["caption"], "a bright runway"),
                     encode_example(processor, noise_image(48, 48, 1), INSTRUCTIONS["scene"], "an airport")],
                    processor.tokenizer.pad_token_id)
    lora_steps_lower_the_loss(lora, batch)
    lora.eval()
    generates_a_batch(lora, processor, [noise_image(40, 60), noise_image(48, 48, 1)])


def test_blip2_opt_loads_masks_trains_and_generates(tmp_path):
    path = write_tiny_blip2_opt(tmp_path / "blip2")
    processor, model = load_processor(path), load_model(path)
    assert type(model).__name__ == "Blip2ForConditionalGeneration"
    # LoRA on OPT's decoder projections only: q/k/v/out_proj and fc1/fc2 per layer, none of the
    # ViT's fc1/fc2 or the Q-Former's query/key/value.
    layers = model.config.text_config.num_hidden_layers
    per_layer = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")
    expected = {f"language_model.model.decoder.layers.{i}.{m}" for i in range(layers) for m in per_layer}
    assert set(lora_modules(model)) == expected
    tok = processor.tokenizer
    response = "a bright runway crosses dark fields"
    ex = encode_example(processor, noise_image(40, 60), INSTRUCTIONS["caption"], response)
    # OPT's "</s>" is BOS and EOS: the BOS after the query tokens stays masked, the answer's EOS is learned.
    assert tok.decode(ex["input_ids"][ex["labels"] != IGNORE]).strip() == response + "</s>"
    image_id = tok.convert_tokens_to_ids("<image>")
    assert (ex["input_ids"] == image_id).sum() == model.config.num_query_tokens
    assert (ex["labels"] == image_id).sum() == 0
    torch.manual_seed(0)
    lora = add_lora(model, r=8, alpha=16, dropout=0.0)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model.model.decoder" in n for n in trainable)
    batch = collate([ex, encode_example(processor, noise_image(48, 48, 1), INSTRUCTIONS["scene"], "a harbor")],
                    tok.pad_token_id)
    lora_steps_lower_the_loss(lora, batch)
    lora.eval()
    generates_a_batch(lora, processor, [noise_image(40, 60), noise_image(48, 48, 1)])


def test_flan_t5_variants_are_refused(tmp_path):
    """BLIP-2 Flan-T5: an encoder-decoder language model, refused before any weight is read."""
    config = Blip2Config(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2),
                         qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=64, encoder_hidden_size=32),
                         text_config=T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, vocab_size=100).to_dict())
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="encoder-decoder language model"):
        load_model(str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["geochat", "h2rsvlm", "blip2_opt"])
def test_family_from_the_command_line_trains_on_ray_and_generates(kind, ray_local, demo_build, tmp_path):
    """`fusionrs tiny-model` (+ `fusionrs convert-llava` for the original-LLaVA layouts), then LoRA
    steps through Ray Train (the vlm-demo recipe on one worker with DDP, one epoch of captions;
    two workers and DeepSpeed run in test_vlm.py) and generation on test images with the
    exported adapter."""
    from fusionrs.cli import main as cli
    from fusionrs.config import VlmTrainConfig, load_config
    from fusionrs.eval.vlm_eval import Generator
    from fusionrs.train.vlm.step import train_vlm

    assert cli(["tiny-model", kind, str(tmp_path / "tiny")]) == 0
    model = tmp_path / "tiny"
    if kind != "blip2_opt":
        src = tmp_path / "tiny" / {"geochat": "geochat-7B-tiny", "h2rsvlm": "vhm-7b-tiny"}[kind]
        tower = ["--vision-tower", str(tmp_path / "tiny" / "clip-vit-patch14-336")] if kind == "geochat" else []
        model = tmp_path / "converted"
        assert cli(["convert-llava", str(src), str(model), *tower]) == 0
    cfg = load_config(REPO / "configs" / "vlm-demo.yaml",
                      [f"data={demo_build}", f"run.storage_path={tmp_path / 'runs'}", f"model.path={model}",
                       f"run.name=vlm-{kind}", "optim.epochs=1", "tasks=[caption]", "model.max_pixels=0",
                       "run.num_workers=1", "run.cpus_per_worker=1", "parallel.strategy=ddp"],
                      cls=VlmTrainConfig)
    result, adapter = train_vlm(cfg)
    assert result.metrics["opt_step"] > 0 and result.metrics["loss"] < result.metrics["first_loss"]
    # Generation with the exported adapter, through the evaluation's Generator (in this process).
    import pyarrow.dataset as pads

    test = pads.dataset(str(demo_build / "triplets"), format="parquet").to_table(
        columns=["ir_jpeg", "split"]).filter(pads.field("split") == "test").slice(0, 4)
    gen = Generator(str(model), adapter=adapter)
    out = gen({"image": test.column("ir_jpeg").to_pylist(), "instruction": [INSTRUCTIONS["caption"]] * 4,
               "max_new_tokens": [8] * 4})
    # Every row generated without an error (a tiny model after one epoch may answer with its end
    # token alone: "empty"; a decode or generate failure would be a status of its own).
    assert len(out["status"]) == 4 and set(out["status"]) <= {"ok", "empty"}, out["status"]
