"""`fusionrs tiny-model qwen2_5_vl OUT`: a tiny random Qwen2.5-VL in Hugging Face format.

Everything a real checkpoint folder has — config, safetensors weights, a byte-level BPE
tokenizer (trained here with `tokenizers` on the instruction texts and the caption lexicons),
image and video processors, chat template, generation config — so recipes, LoRA, training,
checkpoints and generation run through the same code path as Qwen2.5-VL-7B-Instruct. Users
smoke-test a cluster with it before paying for the real model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import BertWordPieceTokenizer, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BertTokenizerFast,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
    OPTConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from fusionrs.core.lexicon import ENGLISH_WORDS, IR_CUE_WORDS
from fusionrs.train.vlm.instructions import INSTRUCTIONS, OBJECTS, SCENES

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat template for text and image content (the video branch is not used here).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TINY_PIXELS = 56 * 56  # 16 patches of 14 px → 4 image tokens after the 2×2 merge


def _corpus() -> list[str]:
    words = sorted(ENGLISH_WORDS | IR_CUE_WORDS | {w for ws in OBJECTS.values() for w in ws}
                   | {w for _, ks in SCENES for k in ks for w in k.split()})
    lines = list(INSTRUCTIONS.values()) + [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    lines += ["seen in grayscale infrared style: bright structures stand out and dark, low-texture regions lie "
              "across the scene, with high intensity contrast and clear structural outlines."]
    return lines * 4


def train_tokenizer(vocab_size: int = 2000, image_tokens: bool = True):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # The byte alphabet is always in the vocabulary: any text encodes, unknown words as bytes.
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
             "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   **({"extra_special_tokens": named} if image_tokens else {}))


def write_tiny_qwen2_5_vl(out_dir: str | Path, seed: int = 0) -> str:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    pixels = {"min_pixels": TINY_PIXELS, "max_pixels": TINY_PIXELS, "patch_size": 14, "merge_size": 2,
              "temporal_patch_size": 2}
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=CHAT_TEMPLATE)
    tid = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         # mrope sections sum to head_dim / 2 (16 / 2), as [16, 24, 24] does for 128.
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=tid("<|endoftext|>"), eos_token_id=tid("<|im_end|>"),
                         pad_token_id=tid("<|endoftext|>"), tie_word_embeddings=False),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=tid("<|image_pad|>"), video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"), vision_end_token_id=tid("<|vision_end|>"),
        tie_word_embeddings=False)  # as Qwen2.5-VL-7B (the 3B ties them)
    return _save(Qwen2_5_VLForConditionalGeneration, config, processor, out, seed)


def _save(model_cls, config, processor, out: Path, seed: int) -> str:
    """Build the random model, give it a usable output range and end token, write the folder."""
    torch.manual_seed(seed)
    model = model_cls(config)
    # Untied embeddings. The output head at std 0.25 gives logits a real model's range (at the
    # usual 0.02 every logit sits near 0 and no adapter on a frozen head could make a token
    # likely). The input embeddings stay at 0.02: tied to a 0.25 head they would dominate the
    # residual stream, the random model would predict its input token (first loss ≈ 16), and
    # LoRA on the demo budget sometimes settled on the most frequent label, the end token
    # (empty answers); untied, the first loss is ≈ 9 and a plain loop of the demo recipe ends
    # at 0.67–0.83 over three seeds (docs/vlm.md, Debug model).
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.02)
        model.get_output_embeddings().weight.normal_(0.0, 0.25)
    tid = processor.tokenizer.convert_tokens_to_ids
    model.generation_config.eos_token_id = tid("<|im_end|>")
    model.generation_config.pad_token_id = tid("<|endoftext|>")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


def _llama_text_config(tokenizer):
    """The decoder of the tiny LLaVA and InstructBLIP (Vicuna is a Llama)."""
    tid = tokenizer.convert_tokens_to_ids
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       bos_token_id=tid("<|endoftext|>"), eos_token_id=tid("<|im_end|>"),
                       pad_token_id=tid("<|endoftext|>"), tie_word_embeddings=False)


# LLaVA-1.5's conversation format ("USER: <image>\n… ASSISTANT: …</s>"), with the tiny tokenizer's
# end token. The image placeholder is the tokenizer's image token, expanded by the processor.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|image_pad|>\n{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{% if message['role'] == 'assistant' %}<|im_end|>{% else %} {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
TINY_IMAGE_SIDE = 28  # tiny LLaVA and InstructBLIP vision towers: 2×2 patches of 14 px


def write_tiny_llava(out_dir: str | Path, next_: bool = False, seed: int = 0) -> str:
    """A tiny LLaVA-1.5 (`next_=False`) or LLaVA-NeXT (1.6, any-resolution tiles) in HF format:
    CLIP vision tower + Llama decoder + the real processor classes, so LLaVA-family checkpoints
    (GeoChat, H2RSVLM converted to HF) go through the same code path in tests."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    tid = tokenizer.convert_tokens_to_ids
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=TINY_IMAGE_SIDE, patch_size=14, projection_dim=32)
    text = _llama_text_config(tokenizer)
    common = dict(vision_config=vision, text_config=text, image_token_id=tid("<|image_pad|>"),
                  vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=True)
    pixels = dict(size={"shortest_edge": TINY_IMAGE_SIDE}, crop_size={"height": TINY_IMAGE_SIDE, "width": TINY_IMAGE_SIDE})
    proc = dict(tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                image_token="<|image_pad|>", num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)
    if next_:
        pinpoints = [[TINY_IMAGE_SIDE, TINY_IMAGE_SIDE], [TINY_IMAGE_SIDE, 2 * TINY_IMAGE_SIDE], [2 * TINY_IMAGE_SIDE, TINY_IMAGE_SIDE]]
        config = LlavaNextConfig(image_grid_pinpoints=pinpoints, **common)
        processor = LlavaNextProcessor(image_processor=LlavaNextImageProcessor(image_grid_pinpoints=pinpoints, **pixels),
                                       **proc)
        cls = LlavaNextForConditionalGeneration
    else:
        config = LlavaConfig(**common)
        processor = LlavaProcessor(image_processor=CLIPImageProcessor(**pixels), **proc)
        cls = LlavaForConditionalGeneration
    return _save(cls, config, processor, out, seed)


def train_qformer_tokenizer():
    """InstructBLIP's Q-Former reads the instruction with a BERT WordPiece tokenizer."""
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(_corpus(), vocab_size=1000, show_progress=False)
    return BertTokenizerFast(tokenizer_object=wp._tokenizer, unk_token="[UNK]", sep_token="[SEP]",
                             pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")


def write_tiny_instructblip(out_dir: str | Path, seed: int = 0) -> str:
    """A tiny InstructBLIP (Vicuna-style: Llama decoder) in HF format: ViT + Q-Former reading the
    instruction + decoder, the real processor with its Q-Former tokenizer, and, like the released
    checkpoints, no chat template (`load_processor` supplies the plain instruction → answer one)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # As in the released checkpoints, the processor adds its own "<image>" token to the tokenizer.
    tokenizer, qformer_tokenizer = train_tokenizer(image_tokens=False), train_qformer_tokenizer()
    n_query = 4
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessor(size={"height": TINY_IMAGE_SIDE, "width": TINY_IMAGE_SIDE}),
        tokenizer=tokenizer, qformer_tokenizer=qformer_tokenizer, num_query_tokens=n_query)
    tid = tokenizer.convert_tokens_to_ids
    text = _llama_text_config(tokenizer)
    config = InstructBlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=TINY_IMAGE_SIDE, patch_size=14),
        qformer_config=dict(vocab_size=len(qformer_tokenizer), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, encoder_hidden_size=32,
                            max_position_embeddings=512, pad_token_id=qformer_tokenizer.pad_token_id),
        text_config=text.to_dict(), num_query_tokens=n_query, image_token_index=tid("<image>"))
    return _save(InstructBlipForConditionalGeneration, config, processor, out, seed)


# OPT's special tokens and their ids (facebook/opt-*): "</s>" is both BOS and EOS.
OPT_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]


def train_opt_tokenizer(vocab_size: int = 2000):
    """A byte-level BPE like OPT's GPT-2 tokenizer: "</s>" starts every sequence and ends the answer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=OPT_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def write_tiny_blip2_opt(out_dir: str | Path, seed: int = 0) -> str:
    """A tiny BLIP-2 with an OPT decoder (Salesforce/blip2-opt-* layout) in HF format: ViT +
    Q-Former (learned queries, no text input) + OPT, whose decoder layers name their projections
    `self_attn.{q,k,v,out}_proj` and `fc1`/`fc2`. Like the released checkpoints: tied OPT
    embeddings, the processor's own "<image>" token, no chat template (`load_processor` supplies
    the plain instruction → answer one)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, n_query = train_opt_tokenizer(), 4
    pixels = BlipImageProcessor(size={"height": TINY_IMAGE_SIDE, "width": TINY_IMAGE_SIDE})
    processor = Blip2Processor(image_processor=pixels, tokenizer=tokenizer, num_query_tokens=n_query)
    tid = tokenizer.convert_tokens_to_ids
    text = OPTConfig(vocab_size=len(tokenizer), hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                     word_embed_proj_dim=64, max_position_embeddings=1024, pad_token_id=tid("<pad>"),
                     bos_token_id=tid("</s>"), eos_token_id=tid("</s>"), dropout=0.0)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=TINY_IMAGE_SIDE, patch_size=14),
        qformer_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=512),
        text_config=text.to_dict(), num_query_tokens=n_query, image_token_index=tid("<image>"))
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config)
    # Tied embeddings (as OPT): one table serves input and output, so _save's split (input 0.02,
    # head 0.25) is not possible; std 0.1 between them gives a first loss of 7.7 (ln V = 7.2) that
    # 8 LoRA steps at lr 1e-2 bring to 3.0 on two examples.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.1)
    model.generation_config.eos_token_id = tid("</s>")
    model.generation_config.pad_token_id = tid("<pad>")
    model.generation_config.bos_token_id = tid("</s>")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)
