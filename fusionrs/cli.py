"""`fusionrs` command line: it parses arguments and dispatches to the library, nothing more.

    fusionrs demo [--out out/demo]                   sample data → build → tiny CLIP and VLM, trained and evaluated
    fusionrs build --config CONFIG [key=value ...]   the build (same as python -m jobs.build_dataset)
    fusionrs plan --config CONFIG [--synthetic N]    the split and a cost forecast, before paying
    fusionrs report OUT [--train RUN ...] [--eval DIR ...]   one HTML page: build, curves, evaluation, cost
    fusionrs sample OUT [--per-source N]             generated sources in the five real formats
    fusionrs cost OUTPUT                             the cost ledger: per run, per stage, work reused
    fusionrs release OUT / verify OUT / tombstone OUT --sample-id ID... --reason R   release files, checks, takedowns
    fusionrs eval-data hit-uav-vqa ROOT --out FILE   HIT-UAV real-thermal VQA questions
    fusionrs config show {build,clip,vlm,eval}       every config key, its default and what it does
    fusionrs tiny-model KIND OUT                     a tiny random model in its real on-disk format
    fusionrs convert-diffv2ir CKPT OUT_DIR           LDM DiffV2IR checkpoint → diffusers folder
    fusionrs convert-llava SRC OUT                   original LLaVA / GeoChat / H2RSVLM → Hugging Face LLaVA

A config is a recipe name (`--config demo`) or a YAML path; `--config` may stand anywhere.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys

from fusionrs.config import BuildConfig, ClipTrainConfig, ConfigError, EvalConfig, VlmTrainConfig, load_config
from fusionrs.config.loader import format_keys
from fusionrs.config.recipes import recipe

CONFIGS = {"build": BuildConfig, "clip": ClipTrainConfig, "vlm": VlmTrainConfig, "eval": EvalConfig}


def cmd_build(args) -> int:
    from fusionrs.build.pipeline import run_build_command  # imports Ray: only when building

    try:
        cfg = load_config(recipe(args.config), args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    return run_build_command(cfg)


def cmd_plan(args) -> int:
    from fusionrs.build.forecast import format_plan, run_plan

    try:
        cfg = load_config(recipe(args.config), args.overrides)
        p = run_plan(cfg, synthetic=args.synthetic, seed=args.seed)
    except (ConfigError, FileNotFoundError) as e:
        print(f"plan: {e}", file=sys.stderr)
        return 2
    print(json.dumps(p, indent=1) if args.json else format_plan(p))
    return 0 if p["cross_split_groups"] == 0 else 1


def cmd_sample(args) -> int:
    from fusionrs.dev.sample import write_sample

    print(json.dumps(write_sample(args.out, per_source=args.per_source, seed=args.seed), indent=1))
    return 0


def cmd_demo(args) -> int:
    from fusionrs.demo import run_demo

    r = run_demo(args.out, args.per_source, args.overrides, clip=not args.skip_clip, vlm=not args.skip_vlm)
    c, out = r["manifest"]["counts"], args.out
    print("\n" + "=" * 72)
    print(f"report       : {r['report']}   (open it in a browser: build, curves, evaluation, cost)")
    print(f"demo finished in {r['seconds']:.0f}s: {c['triplets']} triplets, {c['rejects']} rejects")
    for md, what in ((r["clip_md"], f"retrieval    : {out}/eval/retrieval.md (and .json)"),
                     (r["vlm_md"], f"generative   : {out}/eval/vlm_results.md (and .json, predictions in vlm_predictions.jsonl)")):
        if md:
            print(md)
            print(f"  {what}")
    b = r["build"]
    print(f"  dataset card : {b}/README.md\n  statistics   : {b}/stats.md\n  triplets     : {b}/triplets/   "
          f"rejects: {b}/rejects/\n  manifest     : {b}/manifest.json")
    print("rebuild with changes, e.g.:  fusionrs build --config demo output=out/demo-2 split.seed=3 "
          f"{' '.join(a for a in _sample_roots(out))}")
    return 0


def cmd_report(args) -> int:
    from fusionrs.report_html import write_report

    try:
        print(write_report(args.output, args.train, args.eval, out=args.out, examples=args.examples))
    except FileNotFoundError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    return 0


def _sample_roots(out: str) -> list[str]:
    from fusionrs.dev.sample import source_overrides

    return source_overrides(recipe("demo"), f"{out}/sample") if out != "out/demo" else []


def cmd_cost(args) -> int:
    from fusionrs.build.ledger import format_forecast_vs_spent, format_ledgers, read_ledgers
    from fusionrs.core.storage import Storage

    storage = Storage.from_env()
    runs = read_ledgers(storage, args.output)
    if not runs:
        print(f"no ledger under {args.output}/ledger", file=sys.stderr)
        return 1
    print(format_ledgers(runs[-args.last:] if args.last else runs))
    manifest = f"{args.output.rstrip('/')}/manifest.json"
    if storage.exists(manifest):
        print(format_forecast_vs_spent(json.loads(storage.read_bytes(manifest)).get("forecast"), runs))
    return 0


def cmd_release(args) -> int:
    from fusionrs.dataset.release import ReleaseError, write_release

    rights = dict(r.split("=", 1) for r in args.rights)
    try:
        info = write_release(args.output, rights=rights or None, url=args.url)
    except ReleaseError as e:
        print(f"release: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=1, default=str))
    return 0


def cmd_verify(args) -> int:
    from fusionrs.dataset.release import verify

    problems = verify(args.output)
    for p in problems:
        print(p)
    if problems:
        print(f"verify: {len(problems)} problem(s); first: {problems[0]}", file=sys.stderr)
        return 1
    print(f"verify: {args.output} is consistent (hashes, counts, schema, splits, paths)")
    return 0


def cmd_takedown(args) -> int:
    from fusionrs.build.tombstone import TombstoneError, tombstone

    if not args.sample_ids:
        print("tombstone: name at least one sample_id (positional or --sample-id)", file=sys.stderr)
        return 2
    try:
        info = tombstone(args.output, args.sample_ids, args.reason, whole_groups=args.whole_groups, date=args.date)
    except TombstoneError as e:
        print(f"takedown: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=1, default=str))
    return 0


def cmd_eval_data(args) -> int:
    from fusionrs.eval.hit_uav import write_hit_uav_vqa

    print(json.dumps(write_hit_uav_vqa(args.root, args.out, seed=args.seed), indent=1))
    return 0


def cmd_config_show(args) -> int:
    print(f"{args.which} config keys (dotted key, default, description); override any with key=value:")
    print(format_keys(CONFIGS[args.which]))
    return 0


def cmd_convert_diffv2ir(args) -> int:
    from fusionrs.build.translate.diffv2ir.convert import ConvertError, convert_checkpoint

    try:
        meta = convert_checkpoint(args.ckpt, args.out, sha256=args.sha256, original_config=args.ldm_config,
                                  tokenizer_dir=args.tokenizer)
    except ConvertError as e:
        print(f"convert-diffv2ir: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: meta[k] for k in ("source", "source_sha256", "model_id")}, indent=1))
    print(f"use it with: translate.backend=diffv2ir translate.model={args.out}")
    return 0


def cmd_tiny_model(args) -> int:
    if args.kind == "diffv2ir":
        from fusionrs.dev.tiny_diffv2ir import write_tiny_checkpoint

        path = write_tiny_checkpoint(args.out, seed=args.seed)
        print(f"wrote {path} (+ {path.with_suffix('.yaml').name}); convert it with:\n"
              f"  fusionrs convert-diffv2ir {path} {args.out}/converted")
    elif args.kind == "clip":
        from fusionrs.dev.tiny_clip import write_tiny_clip

        info = write_tiny_clip(args.out, seed=args.seed)
        print("use it with: " + " ".join(f"model.{k}={v}" for k, v in info.items()))
    elif args.kind in ("sam", "blip"):
        from fusionrs.dev.tiny_diffv2ir import write_tiny_blip, write_tiny_sam

        path = (write_tiny_sam if args.kind == "sam" else write_tiny_blip)(args.out, seed=args.seed)
        key = "translate.seg=sam translate.sam_model" if args.kind == "sam" else "translate.prompt_caption=blip translate.blip_model"
        print(f"wrote a tiny {args.kind.upper()} (Hugging Face format) to {path}; use it with: {key}={path}")
    elif args.kind in ("geochat", "h2rsvlm"):
        from fusionrs.dev.tiny_llava_original import write_tiny_geochat, write_tiny_h2rsvlm

        paths = (write_tiny_geochat if args.kind == "geochat" else write_tiny_h2rsvlm)(args.out, seed=args.seed)
        tower = f" --vision-tower {paths['vision_tower']}" if args.kind == "geochat" else ""
        print(f"wrote a tiny {args.kind} in the original LLaVA layout to {paths['checkpoint']}; convert it with:\n"
              f"  fusionrs convert-llava {paths['checkpoint']}{tower} {args.out}/converted")
    else:
        from fusionrs.dev import tiny_vlm

        writer = {"qwen2_5_vl": tiny_vlm.write_tiny_qwen2_5_vl, "instructblip": tiny_vlm.write_tiny_instructblip,
                  "blip2_opt": tiny_vlm.write_tiny_blip2_opt}.get(
            args.kind, functools.partial(tiny_vlm.write_tiny_llava, next_=args.kind == "llava_next"))
        path = writer(args.out, seed=args.seed)
        print(f"wrote a tiny {args.kind} (Hugging Face format) to {path}; use it with: model.path={path}")
    return 0


TINY_KINDS = ["diffv2ir", "clip", "qwen2_5_vl", "llava", "llava_next", "instructblip", "blip2_opt", "geochat",
              "h2rsvlm", "sam", "blip"]


def cmd_convert_llava(args) -> int:
    from fusionrs.train.vlm.convert_llava import main as convert_main

    argv = [args.src, args.out] + (["--vision-tower", args.vision_tower] if args.vision_tower else [])
    return convert_main(argv + (["--image-size", str(args.image_size)] if args.image_size else []))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusionrs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action="store_true",
                   help="Ray's own log lines on the console too (else in OUTPUT/logs/ray.log); anywhere on the line")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    b = sub.add_parser("build", help="build a dataset from a config")
    b.add_argument("--config", required=True, help="a recipe name (demo, fusionrs-600k) or a YAML file")
    b.add_argument("overrides", nargs="*", help="key=value overrides, dotted paths (split.seed=3); "
                                                "`fusionrs config show build` lists every key")
    b.set_defaults(fn=cmd_build)
    pl = sub.add_parser("plan", help="the driver's plan (groups, split, subset) and a cost forecast, before paying")
    pl.add_argument("--config", required=True, help="a recipe name (fusionrs-600k) or a YAML file")
    pl.add_argument("--synthetic", type=int, default=0, metavar="N",
                    help="plan N synthetic metadata rows (the recipe's source mix, realistic duplicates) instead of "
                         "the build's stage files")
    pl.add_argument("--seed", type=int, default=0, help="seed of the synthetic rows")
    pl.add_argument("--json", action="store_true", help="print one JSON object")
    pl.add_argument("overrides", nargs="*", help="key=value overrides of the build config")
    pl.set_defaults(fn=cmd_plan)
    s = sub.add_parser("sample", help="generate sample sources in the five real formats")
    s.add_argument("out", help="folder to write the sources (and records.json, what was written) into")
    s.add_argument("--per-source", type=int, default=40, help="records per source (default 40)")
    s.add_argument("--seed", type=int, default=0, help="random seed of the generator (default 0)")
    s.set_defaults(fn=cmd_sample)
    d = sub.add_parser("demo", help="sample + build + tiny CLIP and VLM on the embedded default (CPU, offline)")
    d.add_argument("--out", default="out/demo", help="where everything goes (default out/demo)")
    d.add_argument("--per-source", type=int, default=40, help="sample records per source (default 40)")
    d.add_argument("--skip-clip", action="store_true", help="no CLIP training and evaluation")
    d.add_argument("--skip-vlm", action="store_true", help="no VLM LoRA training and evaluation")
    d.add_argument("overrides", nargs="*", help="key=value overrides of the build config")
    d.set_defaults(fn=cmd_demo)
    k = sub.add_parser("cost", help="print the cost ledger of a build output (per run, per stage)")
    k.add_argument("output", help="the build's output URI")
    k.add_argument("--last", type=int, default=0, help="only the last N runs")
    k.set_defaults(fn=cmd_cost)
    r = sub.add_parser("release", help="release files: SHA256SUMS, RELEASE_MANIFEST.json, croissant.json, DATASHEET.md")
    r.add_argument("output", help="a completed build's output folder")
    r.add_argument("--url", default="", help="where the dataset will be published (Croissant `url`)")
    r.add_argument("--rights", action="append", default=[], metavar="SOURCE=CODE",
                   help="a rights code for a source the built-in table does not know (repeatable)")
    r.set_defaults(fn=cmd_release)
    v = sub.add_parser("verify", help="check a released output: hashes, row counts, schema, leakage, machine paths")
    v.add_argument("output", help="the released output folder")
    v.set_defaults(fn=cmd_verify)
    td = sub.add_parser("tombstone", aliases=["takedown"],
                        help="remove samples (a tombstone in the manifest) and rewrite the release files")
    td.add_argument("output", help="the build's output folder")
    td.add_argument("sample_ids", nargs="*", help="the sample_ids to take down (or --sample-id)")
    td.add_argument("--sample-id", dest="sample_ids", action="extend", nargs="+", metavar="ID",
                    help="a sample_id to take down (repeatable)")
    td.add_argument("--reason", required=True, help="why (recorded with the date in the manifest)")
    td.add_argument("--whole-groups", action="store_true", help="take down the samples' whole joint groups")
    td.add_argument("--date", default=None, help="the takedown's date (YYYY-MM-DD; default today)")
    td.set_defaults(fn=cmd_takedown)
    ed = sub.add_parser("eval-data", help="evaluation data from a benchmark's release")
    eds = ed.add_subparsers(dest="kind", required=True, metavar="KIND")
    hv = eds.add_parser("hit-uav-vqa", help="HIT-UAV real-thermal VQA questions (official §8 builder)")
    hv.add_argument("root", help="a HIT-UAV release folder (test.json or Annotations/*.xml beside the images)")
    hv.add_argument("--out", required=True, help="the questions file to write (JSONL)")
    hv.add_argument("--seed", type=int, default=20260726, help="the official builder's seed (default 20260726)")
    hv.set_defaults(fn=cmd_eval_data)
    c = sub.add_parser("config", help="show a config's keys, defaults and descriptions")
    cs = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = cs.add_parser("show", help="every key of a config with its default and description")
    show.add_argument("which", choices=sorted(CONFIGS), help="which config")
    show.set_defaults(fn=cmd_config_show)
    v = sub.add_parser("convert-diffv2ir", help="LDM DiffV2IR checkpoint → diffusers folder (safetensors)")
    v.add_argument("ckpt", help="the LDM checkpoint (after_phase_2.ckpt)")
    v.add_argument("out", help="the diffusers folder to write")
    v.add_argument("--sha256", default="", help="expected SHA-256 of CKPT")
    v.add_argument("--ldm-config", default=None, help="LDM config (generate.yaml); default: CKPT.yaml or DiffV2IR's")
    v.add_argument("--tokenizer", default=None, help="a CLIP tokenizer folder; default: built from open_clip's BPE")
    v.set_defaults(fn=cmd_convert_diffv2ir)
    cl = sub.add_parser("convert-llava", help="original LLaVA / GeoChat / H2RSVLM checkpoint → Hugging Face LLaVA "
                                              "folder (docs/vlm-conversion.md)")
    cl.add_argument("src", help="the original checkpoint folder (config.json with mm_vision_tower), local or s3://")
    cl.add_argument("out", help="the Hugging Face folder to write")
    cl.add_argument("--vision-tower", default=None, help="the CLIP folder; default: mm_vision_tower when it is local")
    cl.add_argument("--image-size", type=int, default=None,
                    help="input side in pixels (position grid interpolated); default: the tower's, 504 for GeoChat")
    cl.set_defaults(fn=cmd_convert_llava)
    rp = sub.add_parser("report", help="one self-contained HTML page: build, training curves, evaluation, cost")
    rp.add_argument("output", help="the build's output folder")
    rp.add_argument("--train", action="extend", nargs="+", default=[], metavar="RUN",
                    help="training run folder(s): <run.storage_path>/<run.name>")
    rp.add_argument("--eval", action="extend", nargs="+", default=[], metavar="DIR", help="evaluation folder(s)")
    rp.add_argument("--out", default=None, help="where to write it (default OUTPUT/report.html; never released)")
    rp.add_argument("--examples", type=int, default=4, help="examples per reason, code, task and direction")
    rp.set_defaults(fn=cmd_report)
    t = sub.add_parser("tiny-model", help="write a tiny random model in the real on-disk format (debug model)")
    t.add_argument("kind", choices=TINY_KINDS, help="which model family")
    t.add_argument("out", help="the folder to write")
    t.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    t.set_defaults(fn=cmd_tiny_model)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    p = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:  # accepted after the command too (`fusionrs demo --verbose`)
        argv = ["--verbose", *(a for a in argv if a != "--verbose")]
    args, extra = p.parse_known_args(argv)
    if args.verbose:
        os.environ["FUSIONRS_VERBOSE"] = "1"  # core/ray_session.py reads it, here and in Ray's workers
    # `key=value` overrides may stand anywhere on the line (before or after --config).
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
