import pytest

from fusionrs.config import BuildConfig, ConfigError, apply_overrides, from_dict, load_config

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
