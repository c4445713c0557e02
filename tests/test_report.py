"""The build's reports are summed one output file at a time (issue #13: the driver's memory
stays flat in the rows): the counts equal those of all rows taken together."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from fusionrs.build.report import TripletCounts, reject_counts, table2
from fusionrs.core.storage import Storage
from fusionrs.dataset.layout import Layout
from fusionrs.dataset.schema import IR_CAPTION_ACCEPTED, IR_CAPTION_NOT_SELECTED


def rows(n: int, offset: int, split: str, group: str) -> dict:
    return {"source": ["A" if i % 3 else "B" for i in range(n)], "split": [split] * n,
            "group_id": [group if i == 0 else f"g{offset + i}" for i in range(n)],
            "caption_status": ["original" if i % 2 else "original_stripped" for i in range(n)],
            "ir_caption_status": [(IR_CAPTION_ACCEPTED, IR_CAPTION_NOT_SELECTED, "filtered:x")[i % 3] for i in range(n)],
            "ir_caption_cost_usd": [None if i % 4 == 0 else 0.1 * (offset + i) / 7 for i in range(n)],
            "image_note": [None if i % 5 else "resized" for i in range(n)],
            "is_eval_representative": [split != "train" and i % 2 == 0 for i in range(n)]}


def test_counts_summed_file_by_file_equal_the_counts_of_all_rows(tmp_path):
    st, layout = Storage(), Layout(str(tmp_path / "out"))
    files = [("p0", "train", rows(7, 0, "train", "shared")), ("p1", "val", rows(5, 100, "val", "shared")),
             ("p2", "test", rows(6, 200, "test", "alone"))]
    for part, split, cols in files:
        st.write_parquet(layout.triplets(part, split), pa.table(cols))
    st.write_parquet(layout.rejects("p0"), pa.table({"source": ["A"] * 3, "stage": ["ingest", "ingest", "translate"],
                                                     "reason": ["bad_record", "bad_record", "ir_blank"]}))
    got = TripletCounts.of(layout.output, st).counts()
    every = {k: [x for _, _, cols in files for x in cols[k]] for k in files[0][2]}
    pairs = list(zip(every["source"], every["split"]))
    assert got["triplets"] == 18
    assert got["table2_composition"] == table2(pairs)
    assert got["table3_iraware_accepted"] == table2(p for p, s in zip(pairs, every["ir_caption_status"])
                                                    if s == IR_CAPTION_ACCEPTED)
    assert got["table3_iraware_selected"] == table2(p for p, s in zip(pairs, every["ir_caption_status"])
                                                    if s != IR_CAPTION_NOT_SELECTED)
    assert got["caption_status"] == dict(sorted(Counter(every["caption_status"]).items()))
    assert got["image_notes"] == {"resized": 5}
    assert got["eval_representatives"] == {"val": 3, "test": 3}
    assert got["cross_split_groups_in_output"] == 1  # "shared" sits in train and val
    # Python's sum in file order, as always (a float sum depends on its order).
    assert got["api_cost_usd"] == round(sum(x or 0.0 for x in every["ir_caption_cost_usd"]), 6)
    assert reject_counts(layout.output, st) == {"rejects": 3, "reject_reasons": {"ingest:bad_record": 2,
                                                                                  "translate:ir_blank": 1}}


def test_no_output_files_count_zero(tmp_path):
    got = TripletCounts.of(str(tmp_path / "out"), Storage()).counts()
    assert got["triplets"] == 0 and got["table2_composition"] == {} and got["cross_split_groups_in_output"] == 0
    assert got["api_cost_usd"] == 0.0 and got["eval_representatives"] == {"val": 0, "test": 0}
    assert reject_counts(str(tmp_path / "out"), Storage()) == {"rejects": 0, "reject_reasons": {}}
