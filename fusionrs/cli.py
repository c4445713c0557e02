"""`fusionrs` command line: build, sample, demo.

    fusionrs demo [--out out/demo]                      sample data + build, CPU only, no keys
    fusionrs sample OUT [--per-source N] [--seed S]     generated sources in the five formats
    fusionrs build --config CONFIG [key=value ...]      the build (same as python -m jobs.build_dataset)
    fusionrs cost OUTPUT                                the cost ledger: per run, per stage, work reused
    fusionrs tiny-model KIND OUT                        a tiny random model in its real format (debug model):
                                                        diffv2ir, clip, qwen2_5_vl, llava, llava_next,
                                                        instructblip, sam, blip
    fusionrs convert-diffv2ir CKPT OUT_DIR [--sha256]   LDM checkpoint → diffusers folder
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path

from .config import ConfigError, load_config


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def cmd_build(args) -> int:
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from .build import BuildInterrupted, build

    t0 = time.time()
    try:
        manifest = build(cfg)
    except BuildInterrupted:
        print(f"stopped (SIGTERM); committed work is kept; rerun the same command to resume. Ledger: {cfg.output}/ledger/",
              file=sys.stderr)
        return 143
    c = manifest["counts"]
    print(f"\nbuilt {c['triplets']:,} triplets, {c['rejects']:,} rejects in {time.time() - t0:.1f}s")
    print(f"outputs under {cfg.output}: triplets/ rejects/ manifest.json stats.md README.md config.yaml ledger/")
    if manifest["status"] != "completed":
        print(f"status {manifest['status']}: {len(manifest['pending_parts'])} parts pending; rerun to continue")
    print(f"cost: fusionrs cost {cfg.output}")
    return 0


def cmd_sample(args) -> int:
    from .sample import write_sample

    info = write_sample(args.out, per_source=args.per_source, seed=args.seed)
    print(json.dumps(info, indent=1))
    return 0


def cmd_demo(args) -> int:
    from .build import build
    from .sample import write_sample

    t0 = time.time()
    print(f"[1/4] generating sample sources under {args.out}/sample ...", flush=True)
    info = write_sample(f"{args.out}/sample", per_source=args.per_source, seed=0)
    print(f"      {info['records']} records ({info['planted']} planted problems)")
    print("[2/4] building the dataset on a local Ray instance ...", flush=True)
    cfg = load_config(info["build_config"], [f"output={args.out}/build", *args.overrides])
    manifest = build(cfg)
    c = manifest["counts"]
    clip_md = vlm_md = ""
    if not args.skip_clip:
        clip_md = _demo_clip(args.out, cfg.output)
    if not args.skip_vlm:
        vlm_md = _demo_vlm(args.out, cfg.output)
    print("\n" + "=" * 72)
    print(f"demo finished in {time.time() - t0:.0f}s: {c['triplets']} triplets, {c['rejects']} rejects")
    if clip_md:
        print(clip_md)
        print(f"  retrieval    : {args.out}/eval/retrieval.md (and .json)")
    if vlm_md:
        print(vlm_md)
        print(f"  generative   : {args.out}/eval/vlm_results.md (and .json, predictions in vlm_predictions.jsonl)")
    print(f"  dataset card : {cfg.output}/README.md")
    print(f"  statistics   : {cfg.output}/stats.md")
    print(f"  triplets     : {cfg.output}/triplets/   rejects: {cfg.output}/rejects/")
    print(f"  manifest     : {cfg.output}/manifest.json")
    print("rebuild with changes, e.g.:  fusionrs build --config configs/demo.yaml output=out/demo-2 split.seed=3")
    return 0


def cmd_cost(args) -> int:
    from .config import StorageConfig
    from .ledger import format_ledgers, read_ledgers
    from .storage import Storage

    runs = read_ledgers(Storage.from_config(StorageConfig()), args.output)
    if not runs:
        print(f"no ledger under {args.output}/ledger", file=sys.stderr)
        return 1
    print(format_ledgers(runs[-args.last:] if args.last else runs))
    return 0


def cmd_convert_diffv2ir(args) -> int:
    from .translate.diffv2ir.convert import ConvertError, convert_checkpoint

    try:
        meta = convert_checkpoint(args.ckpt, args.out, sha256=args.sha256, original_config=args.config,
                                  tokenizer_dir=args.tokenizer)
    except ConvertError as e:
        print(f"convert-diffv2ir: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: meta[k] for k in ("source", "source_sha256", "model_id")}, indent=1))
    print(f"use it with: translate.backend=diffv2ir translate.model={args.out}")
    return 0


def cmd_tiny_model(args) -> int:
    if args.kind == "diffv2ir":
        from .translate.diffv2ir.tiny import write_tiny_checkpoint

        path = write_tiny_checkpoint(args.out, seed=args.seed)
        print(f"wrote {path} (+ {path.with_suffix('.yaml').name}); convert it with:\n"
              f"  fusionrs convert-diffv2ir {path} {args.out}/converted")
        return 0
    if args.kind == "clip":
        from .clip.model import write_tiny_clip

        info = write_tiny_clip(args.out, seed=args.seed)
        print(json.dumps(info, indent=1))
        print(f"use it with: model={info['model']} model_config={info['model_config']} pretrained={info['pretrained']}")
        return 0
    if args.kind in ("sam", "blip"):
        from .translate.diffv2ir.blip import write_tiny_blip
        from .translate.diffv2ir.sam import write_tiny_sam

        path = (write_tiny_sam if args.kind == "sam" else write_tiny_blip)(args.out, seed=args.seed)
        key = "translate.sam_model" if args.kind == "sam" else "translate.prompt_caption=blip translate.blip_model"
        print(f"wrote a tiny {args.kind.upper()} (Hugging Face format) to {path}; use it with: {key}={path}")
        return 0
    vlms = {"qwen2_5_vl": "Qwen2.5-VL", "llava": "LLaVA-1.5", "llava_next": "LLaVA-NeXT", "instructblip": "InstructBLIP"}
    if args.kind in vlms:
        from .vlm import tiny

        writer = {"qwen2_5_vl": tiny.write_tiny_qwen2_5_vl, "instructblip": tiny.write_tiny_instructblip}.get(
            args.kind, functools.partial(tiny.write_tiny_llava, next_=args.kind == "llava_next"))
        path = writer(args.out, seed=args.seed)
        print(f"wrote a tiny {vlms[args.kind]} (Hugging Face format) to {path}; use it with: model={path}")
        return 0
    print(f"tiny-model: unknown kind {args.kind!r}", file=sys.stderr)
    return 2


RECIPES = Path(__file__).resolve().parents[1] / "configs"  # the repository's recipes (the demo's too)


def recipe(name: str) -> str:
    path = RECIPES / name
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found: `fusionrs demo` runs from a clone of the repository")
    return str(path)


def _demo_clip(out: str, data: str) -> str:
    """Train the tiny CLIP on the demo build (configs/clip-demo.yaml, paths pointed at this demo's
    output) and evaluate it against the untrained model on the test split."""
    from .clip.model import write_tiny_clip
    from .clip.train import ClipTrainConfig, train_clip
    from .evaluation.clip_eval import evaluate_clip, write_results
    from .evaluation.retrieval import markdown_table

    print("[3/4] training a tiny tri-modal CLIP on it (Ray Train, 2 workers) and evaluating ...", flush=True)
    tiny = write_tiny_clip(f"{out}/tiny-clip")
    cfg = load_config(recipe("clip-demo.yaml"), [f"data={data}", f"storage_path={out}/train",
                                                 *(f"{k}={v}" for k, v in tiny.items())], cls=ClipTrainConfig)
    _, exports = train_clip(cfg)
    results = {name: evaluate_clip(data, "test", tiny["model"], ck, tiny["model_config"])
               for name, ck in (("untrained tiny CLIP", tiny["pretrained"]), ("trained tiny CLIP", exports["best"]))}
    write_results(results, f"{out}/eval")
    return markdown_table({k: v["overall"] for k, v in results.items()}, "Retrieval on the demo's test split (%)")


def _demo_vlm(out: str, data: str) -> str:
    """LoRA-tune a tiny Qwen2.5-VL on the demo build (configs/vlm-demo.yaml) and evaluate the base
    model and the adapter on the test split (four tasks, Table 5 layout)."""
    from .evaluation.vlm_eval import evaluate_vlm, write_vlm_results
    from .vlm.tiny import write_tiny_qwen2_5_vl
    from .vlm.train import VlmTrainConfig, train_vlm

    print("[4/4] LoRA-tuning a tiny Qwen2.5-VL on the IR-aware rows (Ray Train + DeepSpeed) and evaluating ...",
          flush=True)
    model = write_tiny_qwen2_5_vl(f"{out}/tiny-qwen2_5_vl")
    cfg = load_config(recipe("vlm-demo.yaml"), [f"data={data}", f"storage_path={out}/train", f"model={model}"],
                      cls=VlmTrainConfig)
    _, adapter = train_vlm(cfg)
    results = {"tiny Qwen2.5-VL (base)": evaluate_vlm(data, "test", model),
               f"+ LoRA {cfg.setting}": evaluate_vlm(data, "test", model, adapter=adapter)}
    return write_vlm_results(results, f"{out}/eval")


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    p = argparse.ArgumentParser(prog="fusionrs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a dataset from a config")
    b.add_argument("--config", required=True)
    b.add_argument("overrides", nargs="*", help="key=value overrides, dotted paths (split.seed=3)")
    b.set_defaults(fn=cmd_build)
    s = sub.add_parser("sample", help="generate sample sources in the five real formats")
    s.add_argument("out")
    s.add_argument("--per-source", type=int, default=40)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_sample)
    d = sub.add_parser("demo", help="sample + build on the embedded default (CPU, offline)")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--per-source", type=int, default=40)
    d.add_argument("--skip-clip", action="store_true", help="no CLIP training and evaluation")
    d.add_argument("--skip-vlm", action="store_true", help="no VLM LoRA training and evaluation")
    d.add_argument("overrides", nargs="*")
    d.set_defaults(fn=cmd_demo)
    k = sub.add_parser("cost", help="print the cost ledger of a build output (per run, per stage)")
    k.add_argument("output", help="the build's output URI")
    k.add_argument("--last", type=int, default=0, help="only the last N runs")
    k.set_defaults(fn=cmd_cost)
    c = sub.add_parser("convert-diffv2ir", help="LDM DiffV2IR checkpoint → diffusers folder (safetensors)")
    c.add_argument("ckpt")
    c.add_argument("out")
    c.add_argument("--sha256", default="", help="expected SHA-256 of CKPT")
    c.add_argument("--config", default=None, help="LDM config (generate.yaml); default: CKPT.yaml or DiffV2IR's")
    c.add_argument("--tokenizer", default=None, help="a CLIP tokenizer folder; default: built from open_clip's BPE")
    c.set_defaults(fn=cmd_convert_diffv2ir)
    t = sub.add_parser("tiny-model", help="write a tiny random model in the real on-disk format (debug model)")
    t.add_argument("kind", choices=["diffv2ir", "clip", "qwen2_5_vl", "llava", "llava_next", "instructblip", "sam",
                                    "blip"])
    t.add_argument("out")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(fn=cmd_tiny_model)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
