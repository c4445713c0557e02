"""Recipes (the repository's `configs/`, installed as the package data `fusionrs/recipes/`),
found by name or by path: `--config demo` and `--config configs/demo.yaml` name the same file.

This module is not named `fusionrs.recipes`: in an installed wheel that name is the recipes'
folder (pyproject: package-dir), which would shadow a module of the same name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # a source checkout without an install


def recipe(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    for folder in _folders():
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"config {name_or_path!r} is neither a file nor a recipe; recipes: {', '.join(names())}")


def names() -> list[str]:
    """Every recipe's name (rates is the forecast's price table, not a config)."""
    return sorted({f.stem for folder in _folders() for f in folder.glob("*.yaml")})


def _folders() -> list[Path]:
    out = []
    try:
        out.append(Path(str(resources.files("fusionrs.recipes"))))
    except (ModuleNotFoundError, TypeError):
        pass
    if _REPO_CONFIGS.is_dir():
        out.append(_REPO_CONFIGS)
    return out
