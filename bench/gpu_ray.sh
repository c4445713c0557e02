#!/usr/bin/env bash
# The stack through Ray on the GPU machine, against the plain loops, in one bounded run:
#   (retrieval) six-direction retrieval at 10K×10K on the host's CPUs (bench/retrieval_speed.py);
#   (translate) a build with translate.backend=diffv2ir — a full-size random DiffV2IR written as an
#               LDM checkpoint and put through the real converter — over ~500 `fusionrs sample`
#               images in a one-GPU actor pool, images/s and GPU busy % against the plain loop at
#               the same batch and dtype (bench/translate_gpu.py);
#   (clip)      ViT-B/32, ~30 steps through Ray Train + DeepSpeed (python -m jobs.train_clip)
#               against the plain step (bench/clip_gpu.py), on a pseudo_ir build of sample data;
#   (vlm)       the Qwen2.5-VL-7B architecture with random weights, ~30 LoRA steps through Ray
#               Train + DeepSpeed (python -m jobs.train_vlm) against the plain loop (bench/vlm_overhead.py);
#   (levers)    optional: the DiffV2IR speed levers in the plain loop (compile modes, channels-last, fp8).
# Every figure goes to OUT/results.json and OUT/results.md; a failing step is recorded (its
# error in the results, its log in OUT/logs.tar.gz) and the run goes on with what does not
# depend on it. Parts run in the order given and stop starting new steps at the deadline.
#
#   bash bench/gpu_ray.sh OUT [CARRY_DIR]       # CARRY_DIR: gpu_carry.sh's output (run1/, run2/ ...); default .carry
#   PARTS="translate clip" bash bench/gpu_ray.sh OUT .carry       # a subset (default: retrieval translate clip vlm)
#   PARTS=summary WORK=... bash bench/gpu_ray.sh OUT              # only rewrite the results from WORK
#   TINY=1 NO_RAY=1 bash bench/gpu_ray.sh /tmp/out                # CPU dry run: tiny models and sizes; the build
#                                                                 # and training steps only validate their configs
#   TINY=1 bash bench/gpu_ray.sh /tmp/out                         # CPU, tiny, each step with its own local Ray (minutes)
#
# Device run (bench/README-gpu.md): carry [".carry/run1"], command
#   bash bench/gpu_ray.sh $OUT .carry
# Budget: BUDGET_S (default 540 s) from the start of this script; steps that would start after it
# are recorded as skipped. Estimated on the H200 (not yet measured): set-up ~1 min, retrieval
# ~0.3 min, translate ~6 min, clip ~2 min, vlm ~4 min, levers ~8 min: the default parts do not all
# fit in one 9-minute run, so the VLM part usually needs a second call (PARTS=vlm).
set -u -o pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=$(mkdir -p "${1:?usage: bash bench/gpu_ray.sh OUT [CARRY_DIR]}" && cd "$1" && pwd)
carry=${2:-$repo/.carry}
py=${PYTHON:-python3}
tiny=${TINY:-0}
no_ray=${NO_RAY:-0}
parts=${PARTS:-retrieval translate clip vlm}
t_start=$(date +%s)
deadline=$((t_start + ${BUDGET_S:-540}))
work=${WORK:-/tmp/fusionrs-gpu-ray}
logs=$work/logs
mkdir -p "$logs"
: >"$work/steps.tsv"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_TRAIN_V2_ENABLED=1 RAY_USAGE_STATS_ENABLED=0

# Sizes: the real thing on the GPU, tiny on a CPU.
if [ "$tiny" = 1 ]; then
  per_source_a=6; per_source_b=16; retrieval_n=2000; tiny_flag=--tiny
  tr_keys="translate.resolution=64 translate.steps=2 translate.batch_size=4 translate.dtype=float32 translate.num_gpus=0 translate.num_cpus=1"
  tr_plain="--tiny --batches 4 --images 4"; tr_dtype=fp32
  clip_batch=8; clip_plain="--tiny"; vlm_plain="--no-ray --steps 4 --micro-batch 1"; vlm_pixels=3136; use_gpu=false
  vlm_fraction=0.3
  levers_list="off channels_last compile=default,channels_last"; levers_extra="--compile-backend aot_eager"
else
  per_source_a=100; per_source_b=500; retrieval_n=10000; tiny_flag=
  tr_keys="translate.resolution=512 translate.steps=20 translate.batch_size=16 translate.dtype=bfloat16 translate.num_gpus=1 translate.num_cpus=4"
  tr_plain="--batches 16 --images 64"; tr_dtype=bf16
  clip_batch=64; clip_plain="--batch 64 --steps 30"
  vlm_plain="--arch qwen2.5-vl-7b --device cuda --bf16 --no-ray --image-size 256 --max-pixels 401408 --micro-batch 1 --steps 30"
  vlm_pixels=401408; use_gpu=true
  vlm_fraction=0.02  # of ~1,950 train rows: ~40 IR-aware rows, ~40 VLM micro-steps
  levers_list="off channels_last compile=default,channels_last compile=reduce-overhead,channels_last compile=reduce-overhead,channels_last,fp8"
  levers_extra=
fi

# step NAME LIMIT_S CMD...: run CMD with a time limit (never past the deadline); output to
# $logs/NAME.log; NAME, exit status, start and end (epoch s) to steps.tsv. Status 125: skipped.
step() {
  local name=$1 limit=$2
  shift 2
  local now left rc t0
  now=$(date +%s)
  left=$((deadline - now))
  if [ "$left" -lt 20 ]; then
    printf '%s\t125\t%s\t%s\t%s\n' "$name" "$now" "$now" "$limit" >>"$work/steps.tsv"
    echo "[gpu_ray] $name: skipped (deadline)"
    return 125
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "[gpu_ray] $name (limit ${limit}s): $*" | cut -c1-400
  t0=$(date +%s.%N)
  timeout --kill-after=15 "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$t0" "$(date +%s.%N)" "$limit" >>"$work/steps.tsv"
  echo "[gpu_ray] $name: exit $rc"
  tail -n 3 "$logs/$name.log" | cut -c1-300
  return "$rc"
}

skip() {  # skip NAME WHY: a step not run because one it needs failed
  printf '%s\t126\t%s\t%s\t0\t%s\n' "$1" "$(date +%s)" "$(date +%s)" "$2" >>"$work/steps.tsv"
  echo "[gpu_ray] $1: not run ($2)"
}

# A build, or (NO_RAY=1) only its config, loaded and validated.
build() {  # build NAME LIMIT_S OVERRIDES...
  local name=$1 limit=$2
  shift 2
  if [ "$no_ray" = 1 ]; then
    step "$name" "$limit" "$py" -c 'import sys; from fusionrs.config import load_config
c = load_config(sys.argv[1], sys.argv[2:]); print("config ok:", c.output, c.translate)' configs/demo.yaml "$@"
  else
    step "$name" "$limit" "$py" -m fusionrs.cli build --config configs/demo.yaml "$@"
  fi
}

train() {  # train NAME LIMIT_S clip|vlm ARGS...: python -m jobs.train_<kind>, or (NO_RAY=1) its config only
  local name=$1 limit=$2 kind=$3
  shift 3
  if [ "$no_ray" = 1 ]; then
    step "$name" "$limit" "$py" -c 'import sys; from fusionrs.config import ClipTrainConfig, VlmTrainConfig, parse_job_args
cls = {"clip": ClipTrainConfig, "vlm": VlmTrainConfig}[sys.argv[1]]
c = parse_job_args(sys.argv[2:], cls, "", "check"); print("config ok:", c)' "$kind" "$@"
  else
    step "$name" "$limit" "$py" -m "jobs.train_$kind" "$@"
  fi
}

roots() {  # sources.N.root overrides that point configs/demo.yaml at a sample folder
  "$py" -c 'import sys; from fusionrs.dev.sample import source_overrides
print(" ".join(source_overrides("configs/demo.yaml", sys.argv[1])))' "$1"
}

# -- set-up: carried wheels, the repository on the path, GPU sampling, a Ray head ---------------
# (a brace group, not a pipeline: install.sh's PYTHONPATH must reach this shell)
{
  echo "start: $(date -u +%FT%TZ)  parts: $parts  tiny: $tiny  no_ray: $no_ray  budget: ${BUDGET_S:-540}s"
  for f in "$carry"/run*/install.sh; do
    [ -f "$f" ] || continue
    # shellcheck disable=SC1090
    if . "$f"; then echo "installed: $f"; else echo "install FAILED: $f"; fi
  done
  export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
  "$py" - <<'PYEOF'
import importlib, platform, os
print("python", platform.python_version(), "cpus", os.cpu_count())
for m in ("torch", "ray", "deepspeed", "diffusers", "transformers", "open_clip", "peft", "torchao", "py3langid"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - what is missing is the point of this list
        print(m, "MISSING", type(e).__name__, str(e)[:120])
PYEOF
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

smi_pid=
if command -v nvidia-smi >/dev/null; then
  # GPU busy % = the share of each 0.5 s sample during which a kernel ran (utilization.gpu).
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    >"$out/gpu_util.csv" 2>/dev/null &
  smi_pid=$!
fi

ray_up=0
if [ "$no_ray" != 1 ] && [ "$tiny" != 1 ]; then
  # One head for every step (the GPU machine is this run's alone: a head left by an earlier call
  # on a still-warm machine is stopped first). TINY runs on a shared CPU machine start no head:
  # each step starts and ends its own local Ray instance instead.
  timeout 60 "$py" -m ray.scripts.scripts stop >"$logs/ray_stop_before.log" 2>&1
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)
  if step ray_start 90 "$py" -m ray.scripts.scripts start --head --port=6390 --num-cpus="$(nproc)" --num-gpus="${gpus:-0}" \
      --include-dashboard=false --disable-usage-stats --object-store-memory=$((4 << 30)); then
    export RAY_ADDRESS=127.0.0.1:6390
    ray_up=1
  fi
fi

# -- the parts -----------------------------------------------------------------------------------
part_retrieval() {
  step retrieval 90 "$py" bench/retrieval_speed.py --n "$retrieval_n" --repeats 3
}

part_translate() {
  step translate_sample 90 "$py" -m fusionrs.cli sample "$work/sample-a" --per-source "$per_source_a"
  # shellcheck disable=SC2086
  step translate_plain 150 "$py" bench/translate_gpu.py $tr_plain --dtypes "$tr_dtype" --levers off --no-reference \
    --json "$work/translate_plain.json"
  step diffv2ir_ldm 150 "$py" bench/translate_gpu.py --write-ldm "$work/ldm" $tiny_flag || { skip diffv2ir_convert "no checkpoint"; skip translate_build "no model"; return; }
  step diffv2ir_convert 240 "$py" -m fusionrs.cli convert-diffv2ir "$work/ldm/diffv2ir-random.ckpt" "$work/diffv2ir" \
    || { skip translate_build "no model"; return; }
  [ -d "$work/sample-a" ] || { skip translate_build "no sample"; return; }
  rm -rf "$work/build-diffv2ir"
  # shellcheck disable=SC2046,SC2086
  build translate_build 360 "output=$work/build-diffv2ir" $(roots "$work/sample-a") translate.backend=diffv2ir \
    "translate.model=$work/diffv2ir" $tr_keys translate.min_actors=1 translate.max_actors=1 ingest.records_per_unit=64
}

train_data() {  # the training parts' data: a pseudo_ir build (CPU) of more sample data, once per machine and size
  local marker=$work/train_data.ok-$tiny-$no_ray
  [ -f "$marker" ] && return 0
  step train_sample 120 "$py" -m fusionrs.cli sample "$work/sample-b" --per-source "$per_source_b" || return 1
  # A few train rows get IR-aware captions (~30 VLM steps at micro-batch 1); CLIP uses every train row.
  rm -rf "$work/build-train"
  # shellcheck disable=SC2046
  build train_build 240 "output=$work/build-train" $(roots "$work/sample-b") translate.min_actors=4 translate.max_actors=4 \
    "subset.fractions.train=$vlm_fraction" && touch "$marker"
}

part_clip() {
  train_data || { skip clip_ray "no training data"; }
  if [ "$tiny" = 1 ]; then
    "$py" -m fusionrs.cli tiny-model clip "$work/tiny-clip" >"$logs/tiny_clip.log" 2>&1
    model=(model.name=fusionrs-tiny-clip "model.config_json=$work/tiny-clip/fusionrs-tiny-clip.json"
           "model.pretrained=$work/tiny-clip/fusionrs-tiny-clip.pt")
  else
    model=(model.name=ViT-B-32 model.config_json= model.pretrained=)
  fi
  if [ -f "$work/train_data.ok-$tiny-$no_ray" ]; then
    rm -rf "$work/train/clip-gpu"
    train clip_ray 240 clip --config configs/clip-demo.yaml "data=$work/build-train" "${model[@]}" setting=580k-only \
      "batch_size=$clip_batch" run.name=clip-gpu "run.storage_path=$work/train" run.num_workers=1 "run.use_gpu=$use_gpu" \
      run.cpus_per_worker=4 run.checkpoint_every=1000000 run.log_every=5 optim.epochs=1 optim.warmup_steps=3 \
      parallel.strategy=deepspeed "parallel.bf16=$use_gpu"
  fi
  # shellcheck disable=SC2086
  step clip_plain 120 "$py" bench/clip_gpu.py --models ViT-B-32 $clip_plain --precisions bf16-weights
}

part_vlm() {
  train_data || { skip vlm_ray "no training data"; }
  # The 7B architecture with random weights, saved as a Hugging Face folder (bf16, ~17 GB) with
  # the tiny model's processor (bench/vlm_overhead.py's random_arch): what jobs.train_vlm loads.
  step vlm_checkpoint 180 "$py" - "$work" "$tiny" <<'EOF'
import shutil, sys
from pathlib import Path

sys.path.insert(0, "bench")
import torch
from transformers import AutoProcessor

from fusionrs.dev.tiny_vlm import write_tiny_qwen2_5_vl
from vlm_overhead import random_arch

work, tiny = Path(sys.argv[1]), sys.argv[2] == "1"
dst = work / "vlm-random"
shutil.rmtree(dst, ignore_errors=True)
small = write_tiny_qwen2_5_vl(work / "tiny-qwen")
if tiny:
    shutil.copytree(small, dst)
else:
    model = random_arch("qwen2.5-vl-7b", small, "cuda", bf16=True)
    model.save_pretrained(dst, max_shard_size="5GB")
    AutoProcessor.from_pretrained(small).save_pretrained(dst)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
    del model
    torch.cuda.empty_cache()
print("wrote", dst)
EOF
  if [ -f "$work/train_data.ok-$tiny-$no_ray" ] && [ -d "$work/vlm-random" ]; then
    rm -rf "$work/train/vlm-gpu"
    train vlm_ray 300 vlm --config configs/vlm-demo.yaml "data=$work/build-train" "model.path=$work/vlm-random" \
      "model.max_pixels=$vlm_pixels" "tasks=[caption]" micro_batch_size=1 run.name=vlm-gpu "run.storage_path=$work/train" \
      run.num_workers=1 "run.use_gpu=$use_gpu" run.cpus_per_worker=4 run.checkpoint_every=1000000 run.log_every=5 \
      optim.epochs=1 optim.lr=2.0e-4 optim.grad_accum=1 parallel.strategy=deepspeed parallel.zero_stage=2 "parallel.bf16=$use_gpu"
  else
    skip vlm_ray "no checkpoint or no training data"
  fi
  # shellcheck disable=SC2086
  step vlm_plain 240 "$py" bench/vlm_overhead.py $vlm_plain
}

part_levers() {
  # shellcheck disable=SC2086
  step levers 480 "$py" bench/translate_gpu.py $tr_plain --dtypes "$tr_dtype" --levers $levers_list --no-reference \
    $levers_extra --json "$work/translate_levers.json"
}

for p in $parts; do
  case $p in
    retrieval | translate | clip | vlm | levers) "part_$p" ;;
    summary) ;;  # none: only (re)write the results from what WORK holds
    *) echo "[gpu_ray] unknown part $p (retrieval translate clip vlm levers summary)" ;;
  esac
done

# -- wind-down: our Ray head and sampler only; then the results ---------------------------------
[ "$ray_up" = 1 ] && timeout 60 "$py" -m ray.scripts.scripts stop >"$logs/ray_stop.log" 2>&1
[ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null
cp "$work/steps.tsv" "$out/steps.tsv"

"$py" - "$work" "$out" "$tiny" "$clip_batch" <<'EOF'
"""Every figure of this run into OUT/results.json and OUT/results.md (whatever parts ran)."""
import glob, json, os, re, statistics, sys, time
from pathlib import Path

work, out, tiny, clip_batch = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
STATUS = {0: "ok", 124: "timeout", 137: "killed (timeout)", 125: "skipped (deadline)", 126: "not run"}


def read_steps() -> dict:
    steps = {}
    for line in (work / "steps.tsv").read_text().splitlines():
        name, rc, t0, t1, *rest = line.split("\t")
        rc = int(rc)
        log = work / "logs" / f"{name}.log"
        tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
        steps[name] = {"rc": rc, "status": STATUS.get(rc, "failed"), "start": float(t0), "end": float(t1),
                       "seconds": round(float(t1) - float(t0), 1), "why": rest[1] if len(rest) > 1 else "",
                       **({"log_tail": tail} if rc else {})}
    return steps


def gpu_samples() -> list[tuple[float, float, float]]:
    f = out / "gpu_util.csv"
    rows = []
    for line in (f.read_text().splitlines() if f.exists() else []):
        try:
            ts, util, mem = (x.strip() for x in line.split(","))
            rows.append((time.mktime(time.strptime(ts.split(".")[0], "%Y/%m/%d %H:%M:%S")) + float("0." + ts.split(".")[1]),
                         float(util), float(mem)))
        except (ValueError, IndexError):
            continue
    return rows


SAMPLES = gpu_samples()


def busy(t0: float, t1: float) -> dict | None:
    """Mean GPU busy % (and peak memory) over a time window, from the 0.5 s samples."""
    s = [(u, m) for t, u, m in SAMPLES if t0 <= t <= t1]
    if not s:
        return None
    return {"gpu_busy_pct": round(statistics.mean(u for u, _ in s), 1), "samples": len(s),
            "peak_mem_mib": max(m for _, m in s)}


def last_json(text: str) -> dict | None:
    """The JSON object a job prints last (jobs.train_*: {"metrics": ...})."""
    i = text.rfind('\n{\n "metrics"')
    try:
        return json.loads(text[i + 1:]) if i >= 0 else None
    except json.JSONDecodeError:
        return None


def log(name: str) -> str:
    p = work / "logs" / f"{name}.log"
    return p.read_text(errors="replace") if p.exists() else ""


def table_row(text: str, first: str) -> list[str] | None:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells
    return None


def train_windows(run: str, unit: str) -> float | None:
    """Median throughput of the trainer's log windows after the first (data wait included)."""
    f = work / "train" / run / "metrics" / "metrics.jsonl"
    vals = [json.loads(l).get(f"train/{unit}_per_s") for l in f.read_text().splitlines()] if f.exists() else []
    vals = [v for v in vals if v]
    return statistics.median(vals[1:] if len(vals) > 1 else vals) if vals else None


steps = read_steps()
res: dict = {"env": (out / "env.txt").read_text() if (out / "env.txt").exists() else "", "steps": steps}

# -- translate -------------------------------------------------------------------------------
tr: dict = {}
plain = work / "translate_plain.json"
if plain.exists():
    row = json.loads(plain.read_text())["rows"][0]
    tr["plain"] = {k: row[k] for k in ("images_per_s", "mfu", "first_call_s", "batch", "dtype", "device", "resolution", "steps", "error")}
    if "translate_plain" in steps:
        tr["plain"].update(busy(steps["translate_plain"]["start"], steps["translate_plain"]["end"]) or {})
parts = sorted(glob.glob(str(work / "build-diffv2ir" / "_stage" / "ir" / "*" / "*.parquet")))
if parts:
    import pyarrow.parquet as pq

    per = []
    statuses: dict = {}
    for f in parts:
        meta = {k.decode(): v.decode() for k, v in (pq.read_schema(f).metadata or {}).items()}
        st = pq.read_table(f, columns=["ir_status"]).column(0).to_pylist()
        for s in st:
            statuses[s] = statuses.get(s, 0) + 1
        sampled = sum(not (s.startswith("translate_error") or s == "seg_map_missing") for s in st)
        per.append({"rows": sampled, "s": float(meta.get("fusionrs_translate_s", "nan")), "end": os.path.getmtime(f),
                    "runtime": meta.get("fusionrs_runtime")})
    rows_all, s_all = sum(p["rows"] for p in per), sum(p["s"] for p in per)
    first = max(per, key=lambda p: p["s"] / max(1, p["rows"]))  # the part that also loaded the model
    rest = [p for p in per if p is not first]
    window = (min(p["end"] - p["s"] for p in per), max(p["end"] for p in per))
    ray = {"parts": len(per), "images_sampled": rows_all, "ir_status": statuses, "runtime": per[0]["runtime"],
           "busy_images_per_s": rows_all / s_all if s_all else None,
           "steady_images_per_s": (sum(p["rows"] for p in rest) / sum(p["s"] for p in rest)) if rest else None,
           "first_part_s": first["s"], "first_part_rows": first["rows"]}
    man = work / "build-diffv2ir" / "manifest.json"
    if man.exists():
        m = json.loads(man.read_text())
        ray["manifest_timings"] = m.get("timings")
        if m.get("timings", {}).get("translate_s"):
            ray["end_to_end_images_per_s"] = rows_all / m["timings"]["translate_s"]
    ray.update(busy(*window) or {})
    if "translate_build" in steps:
        ray["build_wall_s"] = steps["translate_build"]["seconds"]
    tr["ray"] = ray
    if tr.get("plain", {}).get("images_per_s") and ray.get("steady_images_per_s"):
        tr["ray_steady_vs_plain"] = ray["steady_images_per_s"] / tr["plain"]["images_per_s"]
levers = work / "translate_levers.json"
if levers.exists():
    tr["levers"] = json.loads(levers.read_text())["rows"]
res["translate"] = tr

# -- CLIP and VLM ----------------------------------------------------------------------------
def training(kind: str, run: str, unit: str, plain_rows: dict) -> dict:
    d: dict = {}
    job = last_json(log(f"{kind}_ray"))
    if job:
        m = job["metrics"]
        d["ray"] = {"step_s_median": m.get("step_s_median"), "loss": m.get("loss"), "first_loss": m.get("first_loss"),
                    f"{unit}_per_s_windows_median": train_windows(run, unit)}
        if f"{kind}_ray" in steps:
            d["ray"].update(busy(steps[f"{kind}_ray"]["start"], steps[f"{kind}_ray"]["end"]) or {})
    d["plain"] = plain_rows
    if f"{kind}_plain" in steps and plain_rows:
        d["plain"].update(busy(steps[f"{kind}_plain"]["start"], steps[f"{kind}_plain"]["end"]) or {})
    return d


cp = table_row(log("clip_plain"), "fusionrs-tiny-clip" if tiny else "ViT-B-32")
clip = training("clip", "clip-gpu", "samples", {"step_s": float(cp[3]), "samples_per_s": float(cp[4]), "mfu": cp[7],
                                                  "batch": int(cp[2])} if cp else {})
if clip.get("ray", {}).get("step_s_median"):
    clip["ray"]["samples_per_s_step"] = clip_batch / clip["ray"]["step_s_median"]
    if clip["plain"].get("step_s"):
        clip["ray_step_vs_plain"] = clip["ray"]["step_s_median"] / clip["plain"]["step_s"]
res["clip"] = clip
vp = table_row(log("vlm_plain"), "plain torch loop")
vlm = training("vlm", "vlm-gpu", "tokens", {"step_s": float(vp[2]), "tokens_per_s": float(vp[3]), "mfu": vp[5]} if vp else {})
if vlm.get("ray", {}).get("step_s_median") and vlm["plain"].get("step_s"):
    vlm["ray_step_vs_plain"] = vlm["ray"]["step_s_median"] / vlm["plain"]["step_s"]
res["vlm"] = vlm

# -- retrieval -------------------------------------------------------------------------------
m = re.search(r"(\d+)×\d+, (\d+)-d, six directions, (\d+) threads .*?total ([\d.]+) s = similarity products ([\d.]+) s "
              r"\+ ranking ([\d.]+) s", log("retrieval"))
if m:
    res["retrieval"] = {"n": int(m[1]), "dim": int(m[2]), "threads": int(m[3]), "total_s": float(m[4]),
                        "products_s": float(m[5]), "ranking_s": float(m[6])}

(out / "results.json").write_text(json.dumps(res, indent=1, default=str))


def f(x, spec=".2f"):
    return "—" if x is None else (format(x, spec) if isinstance(x, (int, float)) else str(x))


md = ["# gpu_ray.sh results", "", "```", res["env"].strip(), "```", "",
      "| step | status | seconds |", "|---|---|---|"]
md += [f"| {n} | {s['status']}{(' (' + s['why'] + ')') if s['why'] else ''} | {s['seconds']} |" for n, s in steps.items()]
if tr:
    p, r = tr.get("plain", {}), tr.get("ray", {})
    md += ["", "## DiffV2IR translate: Ray build vs plain loop (same batch, dtype, resolution, steps)", "",
           "| loop | images/s | GPU busy % | peak GPU MiB | notes |", "|---|---|---|---|---|",
           f"| plain loop (bench/translate_gpu.py) | {f(p.get('images_per_s'), '.3f')} | {f(p.get('gpu_busy_pct'), '.1f')} | "
           f"{f(p.get('peak_mem_mib'), '.0f')} | batch {p.get('batch')}, {p.get('dtype')}, {p.get('resolution')} px, {p.get('steps')} steps; "
           f"busy % over the whole command (model build and warm-up included) |",
           f"| Ray build, steady (parts after the model loaded) | {f(r.get('steady_images_per_s'), '.3f')} | "
           f"{f(r.get('gpu_busy_pct'), '.1f')} | {f(r.get('peak_mem_mib'), '.0f')} | {r.get('parts')} parts, "
           f"{r.get('images_sampled')} images; busy % over the translate window |",
           f"| Ray build, all parts (model load included) | {f(r.get('busy_images_per_s'), '.3f')} | | | "
           f"first part {f(r.get('first_part_s'), '.1f')} s for {r.get('first_part_rows')} images |",
           f"| Ray build, translate stage wall (actor start included) | {f(r.get('end_to_end_images_per_s'), '.3f')} | | | "
           f"timings {r.get('manifest_timings')} |",
           "", f"Steady Ray / plain: **{f(tr.get('ray_steady_vs_plain'))}×**; IR statuses {r.get('ir_status')}; runtime {r.get('runtime')}"]
    if tr.get("levers"):
        md += ["", "## DiffV2IR levers (plain loop)", "", "| levers | images/s | first call s | max Δ vs plain (levels) | error |",
               "|---|---|---|---|---|"]
        md += [f"| {','.join(f'{k}={v}' for k, v in l['levers'].items() if v not in (False, 'off', 'sdpa')) or 'plain'} | "
               f"{f(l['images_per_s'], '.3f')} | {f(l['first_call_s'], '.1f')} | {l['max_delta_vs_plain']} | "
               f"{l['error']} |" for l in tr["levers"]]
for kind, unit in (("clip", "samples"), ("vlm", "tokens")):
    d = res[kind]
    r, p = d.get("ray", {}), d.get("plain", {})
    if r or p:
        md += ["", f"## {kind.upper()}: Ray Train + DeepSpeed (1 GPU worker) vs plain loop", "",
               f"| loop | step s (median) | {unit}/s | GPU busy % | notes |", "|---|---|---|---|---|",
               f"| plain | {f(p.get('step_s'), '.4f')} | {f(p.get(unit + '_per_s'), '.0f')} | {f(p.get('gpu_busy_pct'), '.1f')} | "
               f"MFU {p.get('mfu')} |",
               f"| Ray Train + DeepSpeed | {f(r.get('step_s_median'), '.4f')} | "
               f"{f(r.get(unit + '_per_s_windows_median'), '.0f')} (log windows, data wait included) | "
               f"{f(r.get('gpu_busy_pct'), '.1f')} | loss {f(r.get('first_loss'), '.3f')} → {f(r.get('loss'), '.3f')} |",
               "", f"Ray step / plain step: **{f(d.get('ray_step_vs_plain'))}×**"]
if "retrieval" in res:
    r = res["retrieval"]
    md += ["", "## Retrieval, six directions", "", "| N | dim | threads | products s | ranking s | total s |",
           "|---|---|---|---|---|---|", f"| {r['n']} | {r['dim']} | {r['threads']} | {r['products_s']} | {r['ranking_s']} | {r['total_s']} |"]
failed = {n: s for n, s in steps.items() if s["rc"] not in (0,)}
if failed:
    md += ["", "## Steps that did not finish", ""]
    for n, s in failed.items():
        md += [f"### {n}: {s['status']} {s['why']}", "```", *s.get("log_tail", [])[-12:], "```"]
(out / "results.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
tar -czf "$out/logs.tar.gz" -C "$work" logs 2>/dev/null
echo "[gpu_ray] done in $(($(date +%s) - t_start)) s: $out/results.md"
