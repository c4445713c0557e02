"""Reading a build's output: the one way training, evaluation and reports get at the data.

    import fusionrs
    ds = fusionrs.load("out/demo/build", split="train")      # a Ray Dataset of triplets
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import ray

from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import Layout


def parquet_files(output: str, table: str = "triplets", storage: Storage | None = None) -> tuple:
    """(filesystem, [paths]) of a build's `triplets` or `rejects` files, in name order."""
    storage = storage or Storage.from_env()
    uri = Layout(output).triplets() if table == "triplets" else Layout(output).rejects()
    fs, _ = storage.resolve(uri)
    return fs, [storage.resolve(f)[1] for f in storage.list_files(uri, "*.parquet")]


def read_dataset(output: str, columns: list[str] | None = None, storage: Storage | None = None,
                 shuffle_seed: int | None = None) -> ray.data.Dataset:
    """The triplets as a Ray Dataset. `shuffle_seed`: file order randomised per epoch (the
    streaming training path; docs/clip.md, "Shuffling")."""
    fs, paths = parquet_files(output, "triplets", storage)
    if not paths:
        raise FileNotFoundError(f"no triplets under {output}: is it a build's output?")
    if shuffle_seed is None:
        return ray.data.read_parquet(paths, filesystem=fs, columns=columns)
    # A new file order every execution (every epoch), the same sequence of orders for the same
    # seed; blocks kept in that order so a seeded local shuffle downstream is reproducible too.
    ds = ray.data.read_parquet(paths, filesystem=fs, columns=columns,
                               shuffle=ray.data.FileShuffleConfig(seed=shuffle_seed, reseed_after_execution=True))
    ds.context.execution_options.preserve_order = True
    return ds


def load(output: str, split: str | None = None, columns: list[str] | None = None,
         storage: Storage | None = None) -> ray.data.Dataset:
    """A build's triplets as a Ray Dataset, optionally one split."""
    ds = read_dataset(output, columns if columns is None or split is None or "split" in columns
                      else [*columns, "split"], storage)
    if split is not None:
        ds = ds.filter(expr=f"split == '{split}'") if split.isidentifier() else ds.filter(lambda r: r["split"] == split)
    return ds


def read_table(output: str, columns: list[str], table: str = "triplets", storage: Storage | None = None) -> pa.Table | None:
    """Columns of every triplets (or rejects) file, in the driver; None when there are none."""
    fs, paths = parquet_files(output, table, storage)
    if not paths:
        return None
    return pads.dataset(paths, filesystem=fs, format="parquet").to_table(columns=columns)


def iter_tables(output: str, columns: list[str], table: str = "triplets",
                storage: Storage | None = None) -> Iterator[pa.Table]:
    """Columns of each triplets (or rejects) file in turn, in name order. For summaries over the
    whole output: one file is in memory at a time (a dataset over all files holds every file's
    footer until the scan ends, ~90 KB a file)."""
    storage = storage or Storage.from_env()
    uri = Layout(output).triplets() if table == "triplets" else Layout(output).rejects()
    for f in storage.list_files(uri, "*.parquet"):
        yield storage.read_parquet(f, columns)
