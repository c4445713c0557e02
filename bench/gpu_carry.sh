#!/usr/bin/env bash
# Wheels the GPU machine lacks, prepared here (a CPU machine that reaches PyPI) for CPython 3.12,
# manylinux x86_64, in transfer sets that each fit one device run (64 MiB with the working tree).
#
#   bash bench/gpu_carry.sh [OUT_DIR]          # default /tmp/fusionrs-carry; see bench/README-gpu.md
#   OUT_DIR/run1/*.whl, OUT_DIR/run1/install.sh (and run2/ when one set does not fit)
#
# The GPU machine (one H200, Python 3.12, torch 2.11, transformers, peft, accelerate, pyarrow,
# pandas, tensorboard; no network) lacks Ray, DeepSpeed, diffusers, open_clip_torch, ftfy,
# jsonschema, pydantic, hjson and tensorboardX. Versions are the ones this repository's own
# environment runs. torch, nvidia-* and transformers are never carried.
# - Ray's wheel (~79 MB) is repacked without ray/jars/ray_dist.jar (Java workers, ~31 MB
#   compressed) and the dashboard's JS source maps (~6.7 MB): RECORD is rewritten with the
#   sha256 and size of every remaining file, so pip accepts it.
# - DeepSpeed is built here as a pure-Python wheel (DS_BUILD_OPS=0: ops JIT-compile on the GPU
#   machine, which has nvcc); building imports torch, so PYTHON must have torch (the repo's .venv).
# - The dependency closure is listed below (CARRY) and checked: every requirement of a carried
#   wheel (ray with its data/train/tune extras) is carried or in GPU_HAS. Versions of what the
#   GPU machine has are not known here; typing-extensions is carried for pydantic's minimum.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/tmp/fusionrs-carry}
py=${PYTHON:-$repo/.venv/bin/python}
limit_mib=${CARRY_LIMIT_MIB:-64}  # what one device run carries, working tree included (lower it to try the split)
limit=$((limit_mib * 1024 * 1024))

# name==version, the closure: ray's (core, data, train, tune) requirements the GPU machine lacks,
# DeepSpeed's, diffusers', open_clip's, ingest's language ID, torchao for the FP8 lever.
CARRY=(
  ray==2.60.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  tensorboardX==2.6.5 hjson==3.1.0
  diffusers==0.42.1 importlib-metadata==10.2.0 lazy-importer==0.1.0
  open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  py3langid==0.4.0       # ingest's language check (the sample plants a non-English caption)
  torchao==0.18.0        # translate.fp8 (FP8 linears in the UNet); spills into run2
)
DEEPSPEED=deepspeed==0.19.8
# On the GPU machine's image (device KINDS.md, read 2026-11-17), as far as carried wheels need them.
GPU_HAS="torch torchvision transformers peft accelerate pyarrow pandas numpy tensorboard click filelock msgpack
packaging protobuf pyyaml requests fsspec attrs einops ninja psutil py-cpuinfo tqdm huggingface-hub regex
safetensors pillow zipp timm httpx"

dl=$out/download
# OUT_DIR is emptied first: only a folder this script made (or a new one), never any other.
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/.fusionrs-carry" ]; then
  echo "refusing to empty $out: not a gpu_carry.sh output folder" >&2
  exit 1
fi
rm -rf "$out"
mkdir -p "$dl/src"
touch "$out/.fusionrs-carry"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for spec in "${CARRY[@]}"; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dl" "$spec"
done
"$py" -m pip download -q --no-deps --no-binary=:all: -d "$dl/src" "$DEEPSPEED"
DS_BUILD_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$dl" "$dl"/src/deepspeed-*.tar.gz

"$py" - "$dl" "$out" "$limit" "$repo" "$GPU_HAS" <<'EOF'
"""Repack Ray, check the closure, split into transfer sets, write each set's install.sh."""
import base64, csv, hashlib, io, re, shutil, subprocess, sys, zipfile
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

dl, out, limit, repo, gpu_has = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
GPU_HAS = {canonicalize_name(n) for n in gpu_has.split()}
RAY_EXTRAS = {"data", "train", "tune"}
SITE = "/tmp/fusionrs-site"  # on the GPU machine, outside the repo copy: run 2 finds run 1's installs there


def dist_info(names, file: str) -> str:
    """The wheel's own .dist-info file (Ray vendors other packages' dist-info folders deeper down)."""
    return next(n for n in names if re.fullmatch(rf"[^/]+\.dist-info/{file}", n))


def dropped(name: str) -> bool:
    return name == "ray/jars/ray_dist.jar" or (name.startswith("ray/dashboard/") and name.endswith(".map"))


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zout:
        record_name = dist_info(zin.namelist(), "RECORD")
        rows = []
        for info in zin.infolist():
            if info.filename == record_name or dropped(info.filename):
                continue
            data = zin.read(info)
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)  # keeps names, dates, modes
            if not info.is_dir():
                rows.append((info.filename, record_hash(data), str(len(data))))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [(record_name, "", "")])
        zout.writestr(zin.getinfo(record_name), buf.getvalue())


def verify_record(whl: Path) -> None:
    """Every file is in RECORD with its hash and size, and RECORD names nothing else."""
    with zipfile.ZipFile(whl) as z:
        record_name = dist_info(z.namelist(), "RECORD")
        rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(z.read(record_name).decode())) if r}
        files = [i.filename for i in z.infolist() if not i.is_dir()]
        assert set(files) == set(rows), "RECORD and the archive disagree"
        for name in files:
            if name != record_name:
                data = z.read(name)
                assert rows[name] == [record_hash(data), str(len(data))], name
        assert not any(dropped(n) for n in files)


def requirements(whl: Path) -> list[Requirement]:
    with zipfile.ZipFile(whl) as z:
        meta = z.read(dist_info(z.namelist(), "METADATA")).decode()
    return [Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines() if line.startswith("Requires-Dist:")]


ray_src = next(dl.glob("ray-*.whl"))
ray_slim = dl / "slim" / ray_src.name
ray_slim.parent.mkdir()
repack(ray_src, ray_slim)
verify_record(ray_slim)
print(f"ray repacked: {ray_src.stat().st_size / 2**20:.1f} MiB -> {ray_slim.stat().st_size / 2**20:.1f} MiB")
ray_src.unlink()
shutil.move(ray_slim, dl / ray_src.name)

wheels = sorted(dl.glob("*.whl"))
carried = {canonicalize_name(parse_wheel_filename(w.name)[0]) for w in wheels}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
       "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
       "platform_python_implementation": "CPython"}
missing = []
for w in wheels:
    name = canonicalize_name(parse_wheel_filename(w.name)[0])
    for req in requirements(w):
        extras = RAY_EXTRAS if name == "ray" else set()
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""}):
            continue
        dep = canonicalize_name(req.name)
        if dep not in carried and dep not in GPU_HAS and not dep.startswith("nvidia-"):
            missing.append(f"{name} needs {req}")
if missing:
    sys.exit("dependency closure incomplete:\n  " + "\n  ".join(missing))

# The working tree travels with the wheels: its size comes off each set's budget.
tree = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "-co", "--exclude-standard"],
                      capture_output=True, check=True).stdout.split(b"\0")
tree_bytes = sum((repo / f.decode()).stat().st_size for f in tree if f and (repo / f.decode()).is_file())
budget = limit - tree_bytes
sizes = {w: w.stat().st_size for w in wheels}
for w, n in sizes.items():
    if n > budget:
        sys.exit(f"{w.name} ({n / 2**20:.1f} MiB) alone exceeds a transfer set ({budget / 2**20:.1f} MiB)")
sets: list[list[Path]] = []
for w in sorted(wheels, key=lambda w: -sizes[w]):  # first fit, largest first: Ray opens run 1
    for s in sets:
        if sum(sizes[x] for x in s) + sizes[w] <= budget:
            s.append(w)
            break
    else:
        sets.append([w])

total = 0
for i, s in enumerate(sets, 1):
    folder = out / f"run{i}"
    folder.mkdir()
    for w in sorted(s):
        shutil.move(w, folder / w.name)
        print(f"run{i}  {sizes[w]:>10,d}  {w.name}")
    n = sum(sizes[w] for w in s)
    total += n
    print(f"run{i}  {n:>10,d}  total of the set ({n / 2**20:.2f} MiB; + working tree {tree_bytes / 2**20:.2f} MiB "
          f"= {(n + tree_bytes) / 2**20:.2f} of {limit / 2**20:.0f} MiB)")
    if n + tree_bytes > limit:
        sys.exit(f"run{i} exceeds {limit / 2**20:.0f} MiB")
    # One --target folder per set (pip --target --upgrade would replace a shared bin/ wholesale);
    # PYTHONPATH lists them all, later sets first.
    need = "".join(f'test -f {SITE}/run{j}/.installed || {{ echo "run {j}\'s installs are gone from {SITE} (the machine '
                   f'was given back): carry and install run{j} first" >&2; return 1 2>/dev/null || exit 1; }}\n'
                   for j in range(1, i))
    path = ":".join(f"{SITE}/run{j}" for j in range(i, 0, -1))
    (folder / "install.sh").write_text(
        f"# Source from the repo root on the GPU machine, with carry [\"<this folder>\"]:  . <this folder>/install.sh\n"
        f"{need}"
        f"rm -rf {SITE}/run{i}\n"
        f'python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target {SITE}/run{i} '
        f'"$(dirname "${{BASH_SOURCE[0]}}")"/*.whl || {{ return 1 2>/dev/null || exit 1; }}\n'
        f"touch {SITE}/run{i}/.installed\n"
        f'export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}\n')
print(f"all    {total:>10,d}  in {len(sets)} set(s), {total / 2**20:.2f} MiB; working tree {tree_bytes:,d} bytes")
EOF
rm -rf "$dl"
