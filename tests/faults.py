"""Trainer callbacks the tests inject from their own side (trainer.fit(callbacks=...)): a worker
failure at a chosen optimizer step, and a probe of the weights a restarted worker starts from.
Ray workers import this module by name (the driver's working directory is on their path)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def weights_digest(named_tensors) -> str:
    """sha256 over (name, float32 bytes) of tensors, names sorted and stripped of wrappers' prefixes."""
    h = hashlib.sha256()
    for name, t in sorted((n.removeprefix("module."), t) for n, t in named_tensors):
        h.update(name.encode())
        h.update(t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def trainable_digest(model: torch.nn.Module) -> str:
    return weights_digest((n, p) for n, p in model.named_parameters() if p.requires_grad)


class FailOnce:
    """Raise in rank 0 before the first micro-step at optimizer step `at` (once: a marker file)."""

    def __init__(self, at: int, marker: Path):
        self.at, self.marker = at, Path(marker)

    def __call__(self, info) -> None:
        if info.rank == 0 and info.opt_step == self.at and not self.marker.exists():
            self.marker.write_text("failed")
            raise RuntimeError(f"injected failure at optimizer step {self.at}")


class ProbeRestore:
    """Record, per rank, the step and the trainable weights an attempt starts from after a restore."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def __call__(self, info) -> None:
        if info.first_of_attempt and info.restored:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"rank{info.rank}.json").write_text(json.dumps(
                {"opt_step": info.opt_step, "micro_step": info.micro_step, "digest": trainable_digest(info.model)}))


def checkpoint_digest(result, opt_step: int, trainable_only_names: set[str] | None = None) -> str:
    """The digest of the weights in the run's checkpoint at `opt_step` (DeepSpeed or DDP layout)."""
    for ckpt, metrics in result.best_checkpoints:
        if metrics["opt_step"] != opt_step:
            continue
        with ckpt.as_directory() as d:
            d = Path(d)
            ds = d / "ds" / "mp_rank_00_model_states.pt"
            state = (torch.load(ds, map_location="cpu", weights_only=False)["module"] if ds.exists()
                     else torch.load(d / "train.pt", map_location="cpu", weights_only=True)["model"])
        if trainable_only_names is not None:
            state = {k: v for k, v in state.items() if k in trainable_only_names}
        return weights_digest(state.items())
    raise AssertionError(f"no checkpoint at optimizer step {opt_step}: {[m['opt_step'] for _, m in result.best_checkpoints]}")


def tensorboard_scalars(logdir, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar over every event file in `logdir`, in step order (TensorBoard's
    own reader: what `tensorboard --logdir` would plot)."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    for f in sorted(Path(logdir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            points += [(e.step, e.value) for e in acc.Scalars(tag)]
    return sorted(points)
