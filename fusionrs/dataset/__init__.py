"""The seam between the build and training/evaluation: the output's schema (every column and
status word), its layout (paths under an output) and how to read it."""
