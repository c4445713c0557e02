import hashlib

import pytest

from fusionrs.build import clean as C
from fusionrs.config.build import CleanConfig


@pytest.fixture(scope="module")
def cleaner():
    return C.CaptionCleaner(CleanConfig())


@pytest.mark.parametrize("text,reason", [
    ("many buildings are near a river", C.OK),
    ("Stock photo of aerial view of many boats in the harbor", C.OK_STRIPPED),
    ("Google Earth view of a lake surrounded by trees", C.OK_STRIPPED),
    ("© 2019 Shutterstock", C.BOILERPLATE_ONLY),
    ("", C.EMPTY),
    ("   ", C.EMPTY),
    ("una foresta densa con molti alberi verdi", C.NON_ENGLISH),
    ("viele Gebäude stehen neben einem Fluss", C.NON_ENGLISH),
    ("机场有很多飞机", C.NON_ENGLISH),
    ("a river", C.TOO_SHORT),
    (" ".join(["many fields of farmland with crops"] * 12), C.TOO_LONG),
    ("an aerial image", C.GENERIC),
    ("IMG_2031.jpg", C.GENERIC),
    ("it looks nice and beautiful today", C.NO_CONTENT),
])
def test_sentence_reasons(cleaner, text, reason):
    assert cleaner.sentence_reason(text, "karpathy_json")[0] == reason


def test_weak_rs5m_only_for_rs5m(cleaner):
    assert cleaner.sentence_reason("boats in a harbor", "rs5m_wds")[0] == C.WEAK_RS5M
    assert cleaner.sentence_reason("boats in a harbor", "karpathy_json")[0] == C.OK


def test_boilerplate_is_removed_from_the_kept_text(cleaner):
    reason, text = cleaner.sentence_reason("Imagery ©2023 Maxar, Map data Google: many houses near the road", "x")
    assert reason == C.OK_STRIPPED and text == "many houses near the road"


def test_first_clean_sentence_is_the_caption(cleaner):
    r = cleaner.clean(["an aerial image", "a bridge crosses the wide river", "trees grow near the river bank"], "karpathy_json", None)
    assert r.caption == "a bridge crosses the wide river"
    assert r.captions == ["a bridge crosses the wide river", "trees grow near the river bank"]
    assert r.status == C.STATUS_ORIGINAL and r.sentence_reasons == [C.GENERIC, C.OK, C.OK]


def test_class_fallback_and_reject(cleaner):
    r = cleaner.clean(["an aerial image"], "nwpu", "storage_tank")
    assert r.caption == "an aerial image of a storage tank" and r.status == "fallback_class:generic" and r.is_fallback
    r = cleaner.clean(["an aerial image"], "karpathy_json", None)
    assert r.rejected and r.status == "no_usable_caption:generic"


def test_normalization_follows_spec():
    # NFKC (full-width letters and the "ﬁ" ligature), casefold, punctuation → space, collapse.
    assert C.normalize_caption("  Ｍany  ﬁelds, NEAR the River!! ") == "many fields near the river"
    assert C.normalize_caption("Straße") == "strasse"
    key = C.caption_key("Many fields near the river.")
    assert key == hashlib.sha256(b"many fields near the river").hexdigest()
    assert C.caption_key("...") is None and C.caption_key(None) is None
