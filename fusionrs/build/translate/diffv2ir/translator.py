"""The build's `diffv2ir` translate stage: per-image geometry, prompts, segmentation maps,
per-sample seeds, batches of one size, and per-row validation (NaN, blank, decode failure
become reason-coded rejects). The model loads lazily, once per actor, on its first batch.

Identity (fingerprint, manifest) is `identity(cfg, meta)`: the config and the converted model's
metadata, never the machine. `dtype: auto` stays "auto" there (the rule: bf16 on GPU, fp32 on
CPU); the dtype and device each actor actually used are recorded where it ran (`runtime()`),
in every IR stage file's metadata, and summed up in the manifest."""

from __future__ import annotations

import io
import logging
from collections import defaultdict

import torch
from PIL import Image

from fusionrs.build.translate.diffv2ir.pipeline import DiffV2IRPipeline, SamplingConfig, fit, sample_seed, upstream_size
from fusionrs.build.translate.validate import IR_NONFINITE, validate_ir_jpeg
from fusionrs.core.images import encode_jpeg
from fusionrs.core.models import ensure_local, read_model_json
from fusionrs.dataset.schema import IR_OK

log = logging.getLogger("fusionrs.translate.diffv2ir")
VERSION = "diffv2ir-1"
SEG_MISSING = "seg_map_missing"


def model_meta(cfg, storage) -> dict:
    """The converter's record of the model folder (model id, source checkpoint SHA-256)."""
    meta = read_model_json(cfg.model, storage, "fusionrs_diffv2ir.json")
    if cfg.model_sha256 and meta.get("source_sha256") != cfg.model_sha256.lower():
        raise ValueError(f"translate.model was converted from a checkpoint with SHA-256 "
                         f"{meta.get('source_sha256')}, not the configured {cfg.model_sha256}")
    return meta


def identity(cfg, meta: dict) -> dict:
    return {"backend": "diffv2ir", "version": VERSION, "model_id": meta["model_id"],
            "source_sha256": meta.get("source_sha256"), "resolution": cfg.resolution, "steps": cfg.steps,
            "cfg": [cfg.cfg_text, cfg.cfg_image, cfg.cfg_seg], "seed": cfg.seed, "dtype": cfg.dtype,
            "seg": cfg.seg, "seg_path": cfg.seg_path, "prompt": cfg.prompt, "jpeg_quality": cfg.jpeg_quality,
            # Only when used, so that caption-prompted outputs keep their fingerprint.
            **({"prompt_caption": "blip", "blip_model": cfg.blip_model, "blip_max_new_tokens": cfg.blip_max_new_tokens}
               if cfg.prompt_caption == "blip" else {})}


class DiffV2IRTranslator:
    def __init__(self, cfg, storage):
        self.cfg, self.storage = cfg, storage
        self.meta = model_meta(cfg, storage)
        self.pipe: DiffV2IRPipeline | None = None
        self.sampling = SamplingConfig(steps=cfg.steps, cfg_text=cfg.cfg_text, cfg_image=cfg.cfg_image,
                                       cfg_seg=cfg.cfg_seg, branch_chunks=cfg.branch_chunks)
        self._white: dict[tuple[int, int], Image.Image] = {}
        self._sam = None
        self._blip = None

    def identity(self) -> dict:
        return identity(self.cfg, self.meta)

    def dtype_name(self) -> str:
        """Resolved here, in the process that runs the model (an actor on a GPU node)."""
        if self.cfg.dtype != "auto":
            return self.cfg.dtype
        return "bfloat16" if torch.cuda.is_available() else "float32"

    def runtime(self) -> dict:
        return {"device": "cuda" if torch.cuda.is_available() else "cpu", "dtype": self.dtype_name()}

    def _load(self) -> DiffV2IRPipeline:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        pipe = DiffV2IRPipeline.from_pretrained(ensure_local(self.cfg.model, self.storage), device=device,
                                                dtype=getattr(torch, self.dtype_name()))
        if self.cfg.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
        if self.cfg.compile:
            pipe.unet = torch.compile(pipe.unet)
        log.info("DiffV2IR %s loaded on %s (%s)", self.meta["model_id"], device, self.dtype_name())
        return pipe

    # -- segmentation maps --------------------------------------------------------------
    def seg_map(self, row: dict, rgb: Image.Image, size: tuple[int, int]) -> Image.Image | None:
        mode = self.cfg.seg
        if mode == "white":
            return self._white.setdefault(size, Image.new("RGB", size, (255, 255, 255)))
        if mode == "precomputed":
            rid = row.get("source_record_id") or ""
            uri = self.cfg.seg_path.format(source=row.get("source", ""), sample_id=row["sample_id"],
                                           source_record_id=rid, stem=rid.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            try:
                return fit(Image.open(io.BytesIO(self.storage.read_bytes(uri))), size)
            except (OSError, ValueError):
                return None
        from fusionrs.build.translate.diffv2ir.sam import sam_union_mask

        if self._sam is None:
            from fusionrs.build.translate.diffv2ir.sam import load_sam

            self._sam = load_sam(str(ensure_local(self.cfg.sam_model, self.storage)))
        return fit(sam_union_mask(self._sam, rgb), size)

    def blip_captions(self, images: list[Image.Image]) -> list[str]:
        if self._blip is None:
            from fusionrs.build.translate.diffv2ir.blip import BlipCaptioner

            self._blip = BlipCaptioner(str(ensure_local(self.cfg.blip_model, self.storage)),
                                       max_new_tokens=self.cfg.blip_max_new_tokens)
        return self._blip(images)

    # -- the stage ---------------------------------------------------------------------------
    def __call__(self, batch: dict) -> dict:
        if self.pipe is None:
            self.pipe = self._load()
        n = len(batch["sample_id"])
        ir: list[bytes | None] = [None] * n
        status = ["translate_error:unprocessed"] * n
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        prepared = {}
        for i in range(n):
            row = {k: batch[k][i] for k in batch}
            try:
                rgb = Image.open(io.BytesIO(row["rgb_jpeg"])).convert("RGB")
            except Exception as e:
                status[i] = f"translate_error:{type(e).__name__}"
                continue
            size = upstream_size(*rgb.size, self.cfg.resolution)
            seg = self.seg_map(row, rgb, size)
            if seg is None:
                status[i] = SEG_MISSING
                continue
            prepared[i] = (fit(rgb, size), seg, row.get("caption") or "", sample_seed(self.cfg.seed, row["sample_id"]))
            groups[size].append(i)
        if self.cfg.prompt_caption == "blip" and prepared:
            # Upstream prompts with a BLIP caption of the RGB image; greedy decoding, so reruns agree.
            idx = sorted(prepared)
            try:
                caps = self.blip_captions([prepared[i][0] for i in idx])
            except Exception as e:  # noqa: BLE001 - the rows say why; nothing is translated with a wrong prompt
                for i in idx:
                    status[i] = f"translate_error:blip_{type(e).__name__}"
                    groups[prepared.pop(i)[0].size].remove(i)
                caps = []
            for i, cap in zip(idx, caps):
                img, seg, _, seed = prepared[i]
                prepared[i] = (img, seg, cap, seed)
        prepared = {i: (img, seg, self.cfg.prompt.replace("{caption}", cap), seed)
                    for i, (img, seg, cap, seed) in prepared.items()}
        for size, idx in groups.items():  # one size per UNet call
            for s in range(0, len(idx), self.cfg.batch_size):
                chunk = idx[s:s + self.cfg.batch_size]
                imgs, segs, prompts, seeds = zip(*(prepared[i] for i in chunk))
                try:
                    outs = self.pipe(list(imgs), list(prompts), list(seeds), list(segs), self.sampling)
                except Exception as e:  # e.g. out of memory: the rows say so, the batch goes on
                    for i in chunk:
                        status[i] = f"translate_error:{type(e).__name__}"
                    continue
                for i, img in zip(chunk, outs):
                    if img is None:
                        status[i] = IR_NONFINITE
                        continue
                    data = encode_jpeg(img, self.cfg.jpeg_quality)
                    status[i] = validate_ir_jpeg(data, size)
                    ir[i] = data if status[i] == IR_OK else None
        return {**batch, "ir_jpeg": ir, "ir_status": status}
