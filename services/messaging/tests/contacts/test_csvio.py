"""The CSV plumbing of contacts import/export, without a database: records parsed from text fed
in arbitrary pieces match the csv module reading the whole file, multipart bodies stream the
`file` field, formula escaping round-trips, UUIDv7 ids increase."""

from __future__ import annotations

import csv
import io

import pytest
from common.errors import Unprocessable
from common.ids import uuid7
from hypothesis import given, settings
from hypothesis import strategies as st
from messaging.contacts.csvio import (
    RecordReader,
    RecordTooLong,
    Utf8Decoder,
    escape_cell,
    multipart_file,
    unescape_cell,
    write_rows,
)


def read_in_pieces(data: bytes, cuts: list[int], **kwargs) -> list[list[str] | None]:
    reader, decoder = RecordReader(**kwargs), Utf8Decoder()
    records = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        records += reader.feed(decoder.decode(data[start:cut]))
        start = cut
    records += reader.feed(decoder.decode(b"", final=True)) + reader.finish()
    assert [r.number for r in records] == list(range(1, len(records) + 1))
    return [r.fields for r in records]


cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
rows = st.lists(st.lists(cell, min_size=2, max_size=4), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(rows=rows, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_records_fed_in_any_pieces_are_those_of_the_whole_file(rows, cuts):
    text = write_rows([["a", "b"], *rows])  # quotes, commas, CR/LF inside cells: all quoted
    data = text.encode()
    expected = list(csv.reader(io.StringIO(text, newline="")))
    assert read_in_pieces(data, [c for c in cuts if c < len(data)]) == expected


# Raw text, not written by the csv module: stray and unbalanced quotes, CRLF and LF.
raw_text = st.lists(st.sampled_from(["a", "b", ",", '"', "\n", "\r\n", " "]), max_size=60).map("".join)


@settings(max_examples=500, deadline=None)
@given(body=raw_text, cuts=st.lists(st.integers(min_value=0, max_value=70), max_size=8))
def test_malformed_text_parses_as_the_csv_module_parses_it_whole(body, cuts):
    text = "h,h\n" + body
    data = text.encode()
    expected = list(csv.reader(io.StringIO(text, newline="")))
    assert read_in_pieces(data, [c for c in cuts if c < len(data)]) == expected


def test_a_header_without_commas_but_with_semicolons_sets_the_delimiter():
    data = b"name;phone;tags\nAnn;+14155552671;\"a,b\"\n"
    assert read_in_pieces(data, [5, 17]) == [["name", "phone", "tags"], ["Ann", "+14155552671", "a,b"]]


def test_a_quoted_cell_may_span_lines_and_pieces():
    data = b'name,notes\nAnn,"line one\r\nline ""two"""\nBob,x'
    assert read_in_pieces(data, list(range(0, len(data), 3))) == [
        ["name", "notes"], ["Ann", 'line one\r\nline "two"'], ["Bob", "x"],
    ]


def test_an_unclosed_quote_is_refused_once_the_record_outgrows_the_limit():
    data = b'name,notes\nAnn,"never closed\n' + b"more text\n" * 200
    with pytest.raises(RecordTooLong) as err:
        read_in_pieces(data, list(range(0, len(data), 64)), max_record_chars=1000)
    assert err.value.details == {"row": 2}


def test_a_byte_order_mark_is_dropped_and_bad_utf8_is_refused_with_its_offset():
    assert read_in_pieces("\ufeffname,phone\n".encode(), [1, 2]) == [["name", "phone"]]
    decoder = Utf8Decoder()
    decoder.decode(b"name,phone\n")
    with pytest.raises(Unprocessable) as err:
        decoder.decode(b"Ann,\xff\n")
    assert err.value.code == "INVALID_ENCODING" and err.value.details == {"byteOffset": 15}


@pytest.mark.parametrize("value", ["=1+1", "+cmd|' /C calc'!A0", "-2", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_are_prefixed_with_a_quote_and_unescaped_on_import(value):
    assert escape_cell(value) == "'" + value
    assert unescape_cell(escape_cell(value)) == value


@pytest.mark.parametrize("value", ["Ann", "'quoted", "a=b", "", "'"])
def test_plain_cells_are_left_alone(value):
    assert escape_cell(value) == value
    assert unescape_cell(value) == value


def multipart(parts: list[tuple[str, bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, content in parts:
        out += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\n"
        ).encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def collect(body: bytes, piece: int) -> bytes:
    async def chunks():
        for i in range(0, len(body), piece):
            yield body[i : i + piece]

    return b"".join([c async for c in multipart_file(chunks(), b"XyZ")])


@pytest.mark.parametrize("piece", [1, 7, 4096])
async def test_the_file_field_is_streamed_out_of_a_multipart_body(piece):
    content = b"name,phone\r\nAnn,+14155552671\r\n--XyZ-not-a-boundary\r\n"
    body = multipart([("other", b"ignored"), ("file", content), ("file", b"second file ignored")])
    assert await collect(body, piece) == content


async def test_a_multipart_body_without_a_file_field_is_refused():
    with pytest.raises(Unprocessable) as err:
        await collect(multipart([("upload", b"name,phone\n")]), 64)
    assert err.value.code == "MISSING_FILE"


def test_uuid7_ids_are_version_7_and_strictly_increasing():
    ids = [uuid7() for _ in range(10_000)]
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
