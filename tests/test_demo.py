"""`fusionrs demo` as a user runs it (a subprocess, output not a terminal): it finishes, its
console is at most 120 lines with per-stage progress and ends with where everything is, the
report first; its report has every section and every picture decodes, and opens in headless
Chromium without a broken image or a console error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.test_report_html import CHROMIUM, NO_CHROMIUM, Page, check_in_chromium, decode

MAX_LINES = 120


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}  # its own local Ray, as on a fresh machine
    env.pop("FUSIONRS_VERBOSE", None)
    r = subprocess.run([sys.executable, "-m", "fusionrs.cli", "demo", "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=1800)
    return out, r


@pytest.mark.slow
def test_demo_console_is_short_and_ends_with_the_report(demo):
    out, r = demo
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    lines = (r.stdout + r.stderr).splitlines()
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines:\n" + "\n".join(lines[:200])
    stages = [line.split("]")[0] + "]" for line in lines if line.startswith("[") and "rows/s" in line]
    assert {"[ingest]", "[translate]", "[caption+write]"} <= set(stages), stages  # one progress display per stage
    end = r.stdout[r.stdout.rindex("=" * 72):].splitlines()
    assert end[1].startswith("report       : ") and end[1].split()[2] == str(out / "report.html")
    assert (out / "build" / "logs" / "ray.log").stat().st_size > 0  # Ray's INFO lines went there


@pytest.mark.slow
def test_demo_report_has_every_section_and_opens_in_a_browser(demo, tmp_path):
    from fusionrs.report_html import SECTIONS, write_report

    out, r = demo
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    page = Page((out / "report.html").read_text())
    assert [a["id"] for a in page.tags("section")] == [sid for sid, _ in SECTIONS]
    assert len(page.images) > 20 and all(decode(img["src"]).width > 0 for img in page.images)
    for section in ("training", "retrieval", "vlm"):  # the demo trained and evaluated both models
        assert page.tags("img", section), f"no picture in {section}"
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    # The same inputs with the page's self-check script (the demo's own page forbids scripts).
    runs = [str(out / "train" / "clip-demo"), str(out / "train" / "vlm-demo")]
    uri = write_report(str(out / "build"), runs, [str(out / "eval")], out=str(tmp_path / "report.html"),
                       selfcheck=True)
    check_in_chromium(uri, tmp_path)


@pytest.mark.slow
def test_eval_suite_recipe_runs_on_the_demo(demo, tmp_path):
    """`python -m jobs.evaluate --config configs/eval-suite.yaml`, the recipe as shipped, with its
    out/demo paths pointed at this demo: every configured benchmark runs or says why it skipped."""
    import json

    from tests.conftest import REPO

    out, r = demo
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    recipe = (REPO / "configs" / "eval-suite.yaml").read_text().replace("out/demo", str(out))
    (tmp_path / "eval-suite.yaml").write_text(recipe)
    job = subprocess.run([sys.executable, "-m", "jobs.evaluate", "--config", str(tmp_path / "eval-suite.yaml")],
                         cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                         timeout=1800)
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    results = {p.stem for p in (out / "eval-suite" / "results").glob("*.json")}
    assert {"fusionrs_retrieval", "fusion", "fusionrs_generative"} <= results, results
    shared = (REPO.parent / "shared" / "data" / "hit-uav-sample").exists()
    assert ({"hit_uav_presence", "hit_uav_vqa"} <= results) == shared, results
    assert "caltech: skipped:" in job.stdout and "hit_uav_probe: skipped:" in job.stdout
    generative = json.loads((out / "eval-suite" / "results" / "fusionrs_generative.json").read_text())
    assert set(generative) == {"base", "B-iraware"} and all(g["items"] > 0 for g in generative.values())
