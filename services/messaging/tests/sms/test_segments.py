"""Encoding detection and segment counting: what a user is billed for a text."""

from __future__ import annotations

import math

import pytest
from common.errors import Unprocessable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from messaging.sms import GSM7, MAX_CHARS, UCS2, InvalidSmsText, analyse

GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = "\x0c^{}\\[~]|€"
EMOJI = "😀👍🎉🚀"


def units_of(part: str, encoding: str) -> int:
    if encoding == GSM7:
        return len(part.encode("gsm03.38"))
    return len(part.encode("utf-16-le")) // 2


# -- encoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Your code is 123456", GSM_BASIC, GSM_EXTENSION, "Prix: 5€ [promo]"])
def test_gsm_alphabet_including_the_extension_table_is_gsm7(text):
    assert analyse(text).encoding == GSM7


@pytest.mark.parametrize(
    "text",
    ["ç", "Привет", "你好", "hello 😀", "naïve", "a\x1bb", "\u00a0", "ﬁ", "é\u0301"],
)
def test_anything_outside_it_is_ucs2(text):
    assert analyse(text).encoding == UCS2


def test_every_basic_character_is_one_septet_and_every_extension_character_two():
    assert analyse(GSM_BASIC).units == len(GSM_BASIC)
    assert analyse(GSM_EXTENSION).units == 2 * len(GSM_EXTENSION)
    assert analyse("€").units == 2


def test_ucs2_counts_utf16_code_units_so_an_emoji_is_two():
    assert analyse("ç").units == 1
    assert analyse("😀").units == 2
    assert analyse("a😀b").units == 4


def test_one_non_gsm_character_turns_the_whole_text_into_ucs2():
    text = "a" * 100 + "ç"
    info = analyse(text)
    assert (info.encoding, info.units, info.segments) == (UCS2, 101, 2)


# -- single-part limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments", "per_segment", "remaining"),
    [
        ("a", 1, 160, 159),
        ("a" * 160, 1, 160, 0),
        ("a" * 161, 2, 153, 145),
        ("a" * 306, 2, 153, 0),
        ("a" * 307, 3, 153, 152),
        ("ç", 1, 70, 69),
        ("ç" * 70, 1, 70, 0),
        ("ç" * 71, 2, 67, 63),
        ("ç" * 134, 2, 67, 0),
        ("ç" * 135, 3, 67, 66),
        ("€" * 80, 1, 160, 0),  # 160 septets
        ("€" * 81, 2, 153, 143),  # 162 septets: 76 + 5 euros
        ("😀" * 35, 1, 70, 0),  # 70 code units
        ("😀" * 36, 2, 67, 61),  # 72 code units: 33 + 3 emoji
    ],
)
def test_limits(text, segments, per_segment, remaining):
    info = analyse(text)
    assert (info.segments, info.per_segment, info.remaining) == (segments, per_segment, remaining)
    assert "".join(info.parts) == text


def test_159_septets_plus_an_extension_character_needs_two_parts():
    info = analyse("a" * 159 + "€")  # 161 septets
    assert (info.encoding, info.units, info.segments) == (GSM7, 161, 2)
    assert info.parts == ("a" * 153, "a" * 6 + "€")


# -- parts never split an escape pair or a surrogate pair ------------------------------------------


def test_an_escape_pair_at_the_boundary_moves_whole_to_the_next_part():
    # 152 septets, then € (2): 154 would not fit a 153-septet part, so € opens the second part.
    text = "a" * 152 + "€" + "b" * 10
    info = analyse(text)
    assert info.units == 164
    assert info.parts == ("a" * 152, "€" + "b" * 10)
    assert [units_of(p, GSM7) for p in info.parts] == [152, 12]


def test_an_escape_pair_that_exactly_fills_a_part_stays_in_it():
    text = "a" * 151 + "€" + "b" * 10
    info = analyse(text)
    assert info.parts == ("a" * 151 + "€", "b" * 10)
    assert units_of(info.parts[0], GSM7) == 153


def test_packing_can_need_more_parts_than_dividing_says():
    # 153 euros are 306 septets, exactly 2 x 153, but a part holds only 76 euros (152 septets:
    # the 77th would need a septet of the next part), so the text goes as 3 parts.
    info = analyse("€" * 153)
    assert info.units == 306
    assert math.ceil(info.units / 153) == 2
    assert info.segments == 3
    assert [len(p) for p in info.parts] == [76, 76, 1]


def test_a_surrogate_pair_at_the_boundary_moves_whole_to_the_next_part():
    text = "ç" * 66 + "😀" + "ç" * 10  # 66 + 2 + 10 = 78 units
    info = analyse(text)
    assert info.encoding == UCS2
    assert info.parts == ("ç" * 66, "😀" + "ç" * 10)
    assert [units_of(p, UCS2) for p in info.parts] == [66, 12]


def test_a_surrogate_pair_that_exactly_fills_a_part_stays_in_it():
    info = analyse("ç" * 65 + "😀" + "ç" * 10)
    assert info.parts == ("ç" * 65 + "😀", "ç" * 10)


def test_emoji_only_text_packs_33_per_part():
    info = analyse("😀" * 100)
    assert info.units == 200
    assert [len(p) for p in info.parts] == [33, 33, 33, 1]


# -- bounds ---------------------------------------------------------------------------------------


def test_the_longest_text_allowed_is_1600_characters():
    info = analyse("a" * MAX_CHARS)
    assert (info.units, info.segments) == (1600, 11)
    assert analyse("ç" * MAX_CHARS).segments == 24


@pytest.mark.parametrize(("text", "code"), [("", "EMPTY_MESSAGE"), ("a" * 1601, "MESSAGE_TOO_LONG")])
def test_empty_and_too_long_texts_are_refused_as_a_422(text, code):
    with pytest.raises(InvalidSmsText) as caught:
        analyse(text)
    err = caught.value
    assert isinstance(err, ValueError) and isinstance(err, Unprocessable)
    assert (err.status_code, err.code) == (422, code)


def test_1600_emoji_are_allowed_although_they_are_3200_units():
    info = analyse("😀" * MAX_CHARS)
    assert (info.units, info.segments) == (3200, 49)


def test_a_lone_surrogate_is_refused():
    with pytest.raises(InvalidSmsText):
        analyse("a\ud800b")


# -- properties -----------------------------------------------------------------------------------

texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(GSM_BASIC),
        st.sampled_from(GSM_EXTENSION),
        st.sampled_from("çñ¡ÿ€"),
        st.sampled_from(EMOJI),
        st.characters(exclude_categories=("Cs",)),
    ),
    min_size=1,
    max_size=MAX_CHARS,
)
gsm_texts = st.text(alphabet=st.sampled_from(GSM_BASIC + GSM_EXTENSION), min_size=1, max_size=MAX_CHARS)


def check(text: str) -> None:
    info = analyse(text)
    assert info.segments >= 1
    assert info.segments == len(info.parts)
    assert "".join(info.parts) == text
    assert all(info.parts)
    sizes = [units_of(p, info.encoding) for p in info.parts]
    assert sum(sizes) == info.units
    assert all(size <= info.per_segment for size in sizes)
    assert info.remaining == info.per_segment - sizes[-1]
    if info.segments == 1:
        assert info.per_segment == (160 if info.encoding == GSM7 else 70)
    else:
        assert info.units > (160 if info.encoding == GSM7 else 70)
        assert info.per_segment == (153 if info.encoding == GSM7 else 67)
        # Greedy: each part is as full as it can be, since the next character did not fit.
        for part, size, nxt in zip(info.parts, sizes, info.parts[1:], strict=False):
            assert size + units_of(nxt[0], info.encoding) > info.per_segment, part
    # Each part alone must be encodable the same way (no half escape, no half surrogate).
    for part in info.parts:
        if info.encoding == GSM7:
            assert part.encode("gsm03.38").decode("gsm03.38") == part
        else:
            assert part.encode("utf-16-le").decode("utf-16-le") == part


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_property_any_text(text):
    check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gsm_texts)
def test_property_gsm_text(text):
    assert analyse(text).encoding == GSM7
    check(text)
