"""`fusionrs` command line: build, sample, demo.

    fusionrs demo [--out out/demo]                      sample data + build, CPU only, no keys
    fusionrs sample OUT [--per-source N] [--seed S]     generated sources in the five formats
    fusionrs build --config CONFIG [key=value ...]      the build (same as python -m jobs.build_dataset)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .config import ConfigError, load_config


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def cmd_build(args) -> int:
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from .build import build

    t0 = time.time()
    manifest = build(cfg)
    c = manifest["counts"]
    print(f"\nbuilt {c['triplets']:,} triplets, {c['rejects']:,} rejects in {time.time() - t0:.1f}s")
    print(f"outputs under {cfg.output}: triplets/ rejects/ manifest.json stats.md README.md config.yaml")
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
    print(f"[1/2] generating sample sources under {args.out}/sample ...", flush=True)
    info = write_sample(f"{args.out}/sample", per_source=args.per_source, seed=0)
    print(f"      {info['records']} records ({info['planted']} planted problems)")
    print("[2/2] building the dataset on a local Ray instance ...", flush=True)
    cfg = load_config(info["build_config"], [f"output={args.out}/build", *args.overrides])
    manifest = build(cfg)
    c = manifest["counts"]
    print("\n" + "=" * 72)
    print(f"demo finished in {time.time() - t0:.0f}s: {c['triplets']} triplets, {c['rejects']} rejects")
    print(f"  dataset card : {cfg.output}/README.md")
    print(f"  statistics   : {cfg.output}/stats.md")
    print(f"  triplets     : {cfg.output}/triplets/   rejects: {cfg.output}/rejects/")
    print(f"  manifest     : {cfg.output}/manifest.json")
    print("rebuild with changes, e.g.:  fusionrs build --config configs/demo.yaml output=out/demo-2 split.seed=3")
    return 0


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
    d.add_argument("overrides", nargs="*")
    d.set_defaults(fn=cmd_demo)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
