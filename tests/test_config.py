import pytest

from fusionrs.config import BuildConfig, ClipTrainConfig, ConfigError, EvalConfig, VlmTrainConfig, load_config
from fusionrs.config.loader import apply_overrides, from_dict, parse_job_args

BASE = {"output": "out/x", "sources": [{"name": "RSICD", "format": "karpathy_json", "root": "r", "annotations": "a.json"}]}


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_typo_in_override_names_the_key(tmp_path):
    p = write(tmp_path, "output: o\nsources: [{name: A, format: nwpu, root: r, annotations: a.json}]\n")
    with pytest.raises(ConfigError, match=r"split\.sed") as e:
        load_config(p, ["split.sed=3"])
    assert "seed" in str(e.value)  # the valid keys are listed


def test_typo_in_yaml_names_the_key(tmp_path):
    p = write(tmp_path, "output: o\nsources: [{name: A, format: nwpu, root: r, annotations: a.json, rooot: x}]\n")
    with pytest.raises(ConfigError, match=r"sources\[0\]\.rooot"):
        load_config(p)


@pytest.mark.parametrize("override,match", [
    ("split.seed=abc", r"split\.seed: expected an integer"),
    ("translate.backend=magic", r"translate\.backend"),
    ("ingest.records_per_unit=0", r"ingest\.records_per_unit: must be positive"),
    ("split.fractions.train=0.5", r"split\.fractions must .* sum to 1"),
    ("dedup.caption_groups=maybe", r"dedup\.caption_groups: expected true/false"),
    ("sources.0.format=zip", r"sources\[0\]\.format"),
    ("sources.3.format=zip", r"not an index"),
])
def test_bad_values_fail_clearly(tmp_path, override, match):
    p = write(tmp_path, "output: o\nsources: [{name: A, format: nwpu, root: r, annotations: a.json}]\n")
    with pytest.raises(ConfigError, match=match):
        load_config(p, [override])


def test_overrides_are_typed_and_dotted():
    d = apply_overrides({"split": {"seed": 0}}, ["split.seed=3", "dedup.caption_groups=false", "output=s3://b/p"])
    cfg = from_dict(BuildConfig, {**BASE, **d})
    cfg.validate()
    assert cfg.split.seed == 3 and cfg.dedup.caption_groups is False and cfg.output == "s3://b/p"


def test_fingerprint_ignores_output_but_not_settings():
    a = from_dict(BuildConfig, BASE)
    b = from_dict(BuildConfig, {**BASE, "output": "elsewhere"})
    c = from_dict(BuildConfig, {**BASE, "split": {"seed": 9}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'output'"):
        from_dict(BuildConfig, {"sources": BASE["sources"]})


def test_repo_recipes_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    demo = load_config(root / "demo.yaml")
    full = load_config(root / "fusionrs-600k.yaml")
    assert demo.translate.backend == "pseudo_ir"
    assert sum(sum(c.values()) for c in full.split.counts.values()) == 600_000
    assert {k: sum(c[k] for c in full.split.counts.values()) for k in ("train", "val", "test")} == \
        {"train": 580_000, "val": 10_000, "test": 10_000}
    kinds = {"clip": ClipTrainConfig, "vlm": VlmTrainConfig, "eval": EvalConfig}
    loaded = 0
    for f in sorted(root.glob("*.yaml")):
        if f.stem == "rates":  # not a config: the forecast's rates table
            continue
        cls = kinds.get(f.stem.split("-")[0], BuildConfig)
        assert isinstance(load_config(f, cls=cls), cls), f
        loaded += 1
    assert loaded >= 10


@pytest.mark.parametrize("cls,override,match", [
    (ClipTrainConfig, "optim.lrr=1", r"unknown key 'optim\.lrr'; valid keys here: .*lr"),
    (ClipTrainConfig, "run.num_workers=two", r"run\.num_workers: expected an integer"),
    (ClipTrainConfig, "parallel.strategy=fsdp", r"parallel\.strategy"),
    (VlmTrainConfig, "lora.r=0", r"lora\.r: must be positive"),
    (VlmTrainConfig, "tasks=[caption, poem]", r"tasks\[\]: 'poem'"),
    (EvalConfig, "compute.actors=0", r"compute\.actors: must be positive"),
    (EvalConfig, "split=train", r"split: 'train'"),
])
def test_one_dialect_for_training_and_evaluation(cls, override, match):
    base = ["data=x"] + (["clip.checkpoints.a=b"] if cls is EvalConfig else [])
    with pytest.raises(ConfigError, match=match):
        load_config(None, [*base, override], cls=cls)


def test_job_arguments_config_anywhere_help_and_errors(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("data: d\nrun: {name: r}\n")
    a = parse_job_args(["optim.lr=0.5", "--config", str(p), "batch_size=8"], ClipTrainConfig, "doc", "job")
    assert (a.optim.lr, a.batch_size, a.run.name) == (0.5, 8, "r")
    with pytest.raises(SystemExit) as e:
        parse_job_args(["--help"], VlmTrainConfig, "Train a VLM.", "job")
    out = capsys.readouterr().out
    assert e.value.code == 0 and "Train a VLM." in out
    for key in ("lora.r", "optim.grad_accum", "run.storage_path", "model.max_pixels", "loader.shuffle_buffer"):
        assert key in out, key
    assert "Ray Train run name" in out  # descriptions come from the source comments
    with pytest.raises(SystemExit) as e:
        parse_job_args(["--config", str(p), "run.nme=x"], ClipTrainConfig, "doc", "job")
    assert e.value.code == 2 and "run.nme" in capsys.readouterr().err


def test_schema_doc_is_generated_from_the_dataset_module():
    from pathlib import Path

    from fusionrs.dataset.schema import markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "schema.md"
    assert doc.read_text() == markdown(), "docs/schema.md is stale: python -m fusionrs.dataset.schema > docs/schema.md"


@pytest.mark.parametrize("job,key", [("build_dataset", "translate.backend"), ("train_clip", "model.config_json"),
                                     ("train_vlm", "inputs"), ("evaluate", "vlm.adapters")])
def test_every_job_help_exits_0_and_lists_its_keys(job, key):
    """`python -m jobs.X --help`, as a user runs it from the checkout (no Ray started)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", f"jobs.{job}", "--help"], cwd=repo, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert key in r.stdout and "--config" in r.stdout and f"usage: python -m jobs.{job}" in r.stdout, r.stdout[:500]


def test_every_cli_option_has_help():
    import argparse

    from fusionrs.cli import parser

    missing = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(parser(), "fusionrs")
    assert not missing, missing


def test_verbose_anywhere_on_the_line_turns_the_console_loud(monkeypatch):
    """`fusionrs --verbose COMMAND` and `fusionrs COMMAND --verbose` both set FUSIONRS_VERBOSE=1,
    which core/ray_session.py reads (Ray's log lines on the console); without it nothing is set."""
    from fusionrs.cli import main
    from fusionrs.core.ray_session import verbose

    for argv, loud in ((["config", "show", "build"], False), (["--verbose", "config", "show", "build"], True),
                       (["config", "show", "build", "--verbose"], True)):
        monkeypatch.setenv("FUSIONRS_VERBOSE", "0")  # restored after the test
        assert main(argv) == 0 and verbose() is loud, argv
