"""Tri-modal CLIP for the trainer: the step (model, loss, validation, export) and the driver
entry `train_clip` (data, then `trainer.fit`, then the exports).

    python -m jobs.train_clip --config configs/clip-demo.yaml

Validation retrieval runs on rank 0 at the end of every epoch over the whole val split (one row
per joint group); the epoch with the best Mean R is exported as an open_clip checkpoint
(`export/best.pt`, loads with open_clip.create_model(name, pretrained=...)), and the last epoch
as `export/latest.pt`, apart from the resume checkpoints.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch

from fusionrs.config.train import ClipTrainConfig
from fusionrs.core.storage import Storage, join
from fusionrs.eval.retrieval import six_directions
from fusionrs.train.clip.data import clip_rows, count_rows, preprocessed
from fusionrs.train.clip.loss import trimodal_loss
from fusionrs.train.clip.model import create_from, export_open_clip
from fusionrs.train.trainer import Engine, best_checkpoint, fit, shuffled_dataset, start_ray_for

NEEDED = {"580k-only": ("rgb", "ir", "text"), "A-original": ("ir", "text"), "B-iraware": ("ir", "text_ir"),
          "C-mixed": ("rgb", "ir", "text", "text_ir")}


class ClipStep:
    score_metric = "val_mean_r"
    throughput_unit = "samples"
    checkpoint_frozen = True  # every weight trains
    export_every_checkpoint = False

    def __init__(self, cfg: ClipTrainConfig, context: dict):
        self.cfg = cfg
        self.micro_batch_size = cfg.batch_size

    @classmethod
    def rows_per_optimizer_step(cls, cfg: ClipTrainConfig) -> int:
        return cfg.batch_size * cfg.run.num_workers

    def build_model(self, device: torch.device) -> torch.nn.Module:
        model, _, _ = create_from(self.cfg.model)
        return model.to(device)

    def compile_targets(self, model) -> list[torch.nn.Module]:
        """The image tower and the text transformer: where the FLOPs are (parallel.compile)."""
        text = getattr(model, "transformer", None) or getattr(model, "text", None)
        return [m for m in (model.visual, text) if m is not None]

    def loss(self, model, rows: dict, device):
        feats = encode(model, {k: rows[k] for k in NEEDED[self.cfg.setting]}, device)
        loss, parts = trimodal_loss(feats, model.logit_scale, self.cfg.setting, self.cfg.rgb_ir_weight)
        return loss, parts, len(rows["sample_id"])

    def after_optimizer_step(self, model) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # the official code did not clamp (docs/clip.md)

    def validate(self, model, val, device) -> dict:
        emb = embed(model, val.iter_batches(batch_size=self.cfg.eval_batch_size, batch_format="numpy"), device)
        r = six_directions(emb["emb"], emb["sample_id"], emb["caption_key"])
        return {"val_mean_r": r["mean_r"], "val_mean_all": r["mean_all"]}

    def export(self, engine: Engine, out: Path, rank: int) -> None:
        if rank == 0:  # the open_clip export, apart from the resume state
            export_open_clip(engine.module, out / "model.pt")


def encode(model, batch: dict, device) -> dict:
    """Embeddings of each modality in the batch. RGB and IR go through the shared image tower as
    one batch (one call of twice the size keeps a GPU busier than two; LayerNorm is per sample,
    so the result is the same), and so do the two captions."""
    out = {}
    for encoder, keys in ((model.encode_image, ("rgb", "ir")), (model.encode_text, ("text", "text_ir"))):
        keys = [k for k in keys if k in batch]
        if not keys:
            continue
        feats = encoder(torch.cat([torch.as_tensor(batch[k], device=device) for k in keys]))
        out.update(zip(keys, feats.split([len(batch[k]) for k in keys])))
    return out


def embed(model, batches, device) -> dict:
    """RGB, IR and text embeddings of preprocessed batches, with their ids and caption keys."""
    was_training = model.training
    model.eval()
    out: dict[str, list] = {"rgb": [], "ir": [], "text": [], "sample_id": [], "caption_key": [], "source": []}
    with torch.no_grad():
        for b in batches:
            feats = encode(model, {k: b[k] for k in ("rgb", "ir", "text")}, device)
            for k in ("rgb", "ir", "text"):
                out[k].append(feats[k].float().cpu().numpy())
            for k in ("sample_id", "caption_key", "source"):
                out[k] += list(b[k])
    model.train(was_training)
    return {"emb": {k: np.concatenate(out[k]) for k in ("rgb", "ir", "text")}, "sample_id": out["sample_id"],
            "caption_key": out["caption_key"], "source": out["source"]}


def train_clip(cfg: ClipTrainConfig, storage: Storage | None = None, callbacks=()):
    """Run (or resume) training; returns the Ray Train result and where the exports are."""
    storage = storage or Storage.from_env()
    start_ray_for(cfg)
    _, preprocess, tokenizer = create_from(cfg.model)
    rows = count_rows(cfg.data, "train", cfg.setting, storage)
    streaming = rows >= cfg.loader.materialize_below
    train = clip_rows(cfg.data, "train", cfg.setting, storage,
                      shuffle_seed=cfg.run.seed if streaming and cfg.loader.shuffle_files else None)
    train = preprocessed(shuffled_dataset(train, rows, cfg), preprocess, tokenizer)
    val = preprocessed(clip_rows(cfg.data, "val", "580k-only", storage, eval_only=True), preprocess, tokenizer)
    result = fit(cfg, ClipStep, train, rows, val=val if count_rows(cfg.data, "val", "580k-only", storage, True) else None,
                 callbacks=callbacks)
    return result, export_models(result, cfg, storage)


def export_models(result, cfg: ClipTrainConfig, storage: Storage) -> dict:
    """Copy the best (val Mean R) and the latest epoch's open_clip exports to <run>/export/."""
    out_dir = join(cfg.run.storage_path, cfg.run.name, "export")
    epochs = [(c, m) for c, m in (result.best_checkpoints or []) if m.get("end_of_epoch")]
    picks = {"latest": max(epochs, key=lambda cm: cm[1]["opt_step"]) if epochs else (None, {}),
             "best": best_checkpoint(result, ClipStep.score_metric)}
    paths = {}
    for name, (ckpt, _) in picks.items():
        if ckpt is None:
            continue
        with ckpt.as_directory() as d:
            if (Path(d) / "model.pt").exists():
                dest = join(out_dir, f"{name}.pt")
                if storage.is_local(dest):
                    Path(dest).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(Path(d) / "model.pt", dest)
                else:
                    storage.write_bytes(dest, (Path(d) / "model.pt").read_bytes())
                paths[name] = dest
    paths["metrics"] = sorted((m for _, m in epochs), key=lambda m: m["opt_step"])
    return paths
