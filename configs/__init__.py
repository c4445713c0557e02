"""Recipes. Installed as the package `fusionrs.recipes` (pyproject: package-dir), so an installed
fusionrs finds them by name: `fusionrs build --config demo` (fusionrs/config/recipes.py)."""
