"""The installable package: a wheel built from this checkout, installed into a fresh virtualenv
with no download (its dependencies are the test environment's, seen through a path file), runs
`fusionrs --help` and `fusionrs config show build` from a folder outside the repository, finds
every recipe by name, and ships every subpackage, the recipes and py.typed, but no `jobs`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def subpackages() -> set[str]:
    """Every folder of fusionrs/ with Python files: each must be in the wheel."""
    return {str(p.parent.relative_to(REPO)).replace(os.sep, ".") for p in (REPO / "fusionrs").rglob("*.py")
            if "__pycache__" not in p.parts}


def checkout_copy(dest: Path) -> Path:
    """The files git would hold (tracked, plus untracked ones not ignored): what a clone builds
    from, without build/ or egg-info litter in the working tree."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout (the wheel is built from the files git holds)")
    src = checkout_copy(tmp_path_factory.mktemp("src"))
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: setuptools comes from this environment (no download).
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(dist)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "SetuptoolsDeprecationWarning" not in log and "SetuptoolsWarning" not in log, log[-3000:]
    wheels = list(dist.glob("fusionrs-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"fusionrs"}, tops  # no top-level jobs (or tests, configs) package
    packaged = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith(".py")}
    assert subpackages() <= packaged, subpackages() - packaged
    assert "fusionrs/py.typed" in names
    recipes = {Path(n).name for n in names if n.startswith("fusionrs/recipes/") and n.endswith(".yaml")}
    assert recipes == {p.name for p in (REPO / "configs").glob("*.yaml")}


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_outside_the_repository(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies (torch, ray, ...) are this environment's: a path file, no download. Its own
    # .pth files (the editable install of the checkout) are not processed from there.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=outside, env=env, capture_output=True, text=True, timeout=300)

    where = run(str(py), "-c", "import fusionrs; print(fusionrs.__file__)")
    assert where.returncode == 0 and where.stdout.strip().startswith(site), where.stdout + where.stderr
    help_ = run(str(env_dir / "bin" / "fusionrs"), "--help")
    assert help_.returncode == 0 and "convert-llava" in help_.stdout and "report" in help_.stdout, help_.stderr
    show = run(str(env_dir / "bin" / "fusionrs"), "config", "show", "build")
    assert show.returncode == 0 and "translate.backend" in show.stdout, show.stderr
    # Every recipe by name, as `--config NAME` finds it, from the installed package.
    check = ("from fusionrs.config.recipes import recipe, names\n"
             "from fusionrs.config import load_config, ClipTrainConfig, VlmTrainConfig, EvalConfig, BuildConfig\n"
             "kinds = {'clip': ClipTrainConfig, 'vlm': VlmTrainConfig, 'eval': EvalConfig}\n"
             "for n in names():\n"
             "    if n != 'rates':\n"
             "        load_config(recipe(n), cls=kinds.get(n.split('-')[0], BuildConfig))\n"
             "print(len(names()))")
    loaded = run(str(py), "-c", check)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert int(loaded.stdout.strip()) == len(list((REPO / "configs").glob("*.yaml")))
