"""CSV in and out without holding a file in memory: an incremental record reader fed decoded
text as it arrives, a streaming multipart/form-data file extractor, formula-injection escaping
and a chunk writer. No I/O and no database here."""

from __future__ import annotations

import codecs
import csv
import io
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from common.errors import Unprocessable
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

# OWASP "CSV Injection": a cell starting with one of these is a formula to a spreadsheet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: str | None) -> str:
    """A cell a spreadsheet shows as text: a leading formula character gets a `'` before it."""
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_START) else value


def unescape_cell(value: str) -> str:
    """The inverse of `escape_cell`, so an exported file imports back to the same values."""
    if len(value) > 1 and value[0] == "'" and value[1] in "=+-@\t\r":
        return value[1:]
    return value


def write_rows(rows: Iterable[Sequence[str]]) -> str:
    """Rows as RFC 4180 CSV text (quoted where needed, CRLF line ends)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class Record:
    number: int  # position in the file, the first record (the header) being 1
    fields: list[str] | None  # None when the record could not be parsed
    error: str | None = None


class RecordTooLong(Unprocessable):
    code = "ROW_TOO_LONG"


class _NeedMore(Exception):
    """The reader ran out of complete lines in the middle of the stream."""


class _Lines:
    """The csv reader's input: the complete lines received so far. Running dry before the end of
    the stream raises `_NeedMore` (StopIteration would end the reader's record early)."""

    def __init__(self) -> None:
        self.pending: deque[str] = deque()
        self.taken: list[str] = []  # lines of the record being parsed, to put back on _NeedMore
        self.closed = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if not self.pending:
            if self.closed:
                raise StopIteration
            raise _NeedMore
        line = self.pending.popleft()
        self.taken.append(line)
        return line


class RecordReader:
    """Parses CSV fed in arbitrary pieces of text, with the `csv` module's rules (quoted fields
    may span lines). Only complete lines reach the parser; a record cut by a piece's end is
    parsed again, whole, when the rest arrives. The delimiter is `,` unless the header line has
    none and has `;` or a tab (spreadsheets in some locales save that way)."""

    def __init__(self, *, max_record_chars: int = 64 * 1024) -> None:
        self.max_record_chars = max_record_chars
        self._lines = _Lines()
        self._reader: Iterable[list[str]] | None = None
        self._tail = ""
        self._number = 0

    def feed(self, text: str) -> list[Record]:
        self._tail += text
        cut = self._tail.rfind("\n")
        if cut < 0:
            self._check_length(len(self._tail))
            return []
        complete, self._tail = self._tail[: cut + 1], self._tail[cut + 1 :]
        self._lines.pending.extend(line + "\n" for line in complete[:-1].split("\n"))
        return self._drain()

    def finish(self) -> list[Record]:
        if self._tail:
            self._lines.pending.append(self._tail)
            self._tail = ""
        self._lines.closed = True
        return self._drain()

    def _check_length(self, chars: int) -> None:
        if chars > self.max_record_chars:
            raise RecordTooLong(
                f"Row {self._number + 1} is longer than {self.max_record_chars} characters "
                "(an unclosed quote?)",
                details={"row": self._number + 1},
            )

    def _drain(self) -> list[Record]:
        if self._reader is None:
            if not self._lines.pending:
                return []
            header = self._lines.pending[0]
            delimiter = ","
            if "," not in header:
                delimiter = ";" if ";" in header else "\t" if "\t" in header else ","
            self._reader = csv.reader(self._lines, delimiter=delimiter)
        records: list[Record] = []
        while True:
            try:
                fields = next(self._reader)  # type: ignore[call-overload]
            except _NeedMore:
                taken = self._lines.taken
                self._check_length(sum(map(len, taken)))
                self._lines.pending.extendleft(reversed(taken))
                taken.clear()
                return records
            except StopIteration:
                return records
            except csv.Error as exc:
                self._lines.taken.clear()
                self._number += 1
                records.append(Record(self._number, None, str(exc)))
                continue
            self._lines.taken.clear()
            self._number += 1
            records.append(Record(self._number, fields))


class Utf8Decoder:
    """Bytes to text across chunk boundaries; a UTF-8 byte-order mark (Excel writes one) is dropped."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._offset = 0

    def decode(self, data: bytes, final: bool = False) -> str:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise Unprocessable(
                "The file is not UTF-8 text; save it as CSV UTF-8",
                code="INVALID_ENCODING",
                details={"byteOffset": self._offset + exc.start},
            ) from exc
        self._offset += len(data)
        return text


async def multipart_file(
    chunks: AsyncIterator[bytes], boundary: bytes, field: str = "file"
) -> AsyncIterator[bytes]:
    """The content of the form field `field` of a multipart/form-data body, streamed as it is
    parsed (nothing spooled to memory or disk). Other fields are skipped."""
    out: list[bytes] = []
    header_name = bytearray()
    header_value = bytearray()
    part_name: list[str | None] = [None]
    state = {"in_file": False, "found": False, "done": False}

    def on_part_begin() -> None:
        part_name[0] = None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        if bytes(header_name).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(header_value))
            name = options.get(b"name")
            part_name[0] = name.decode("latin-1") if name is not None else None
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        state["in_file"] = part_name[0] == field and not state["found"]
        if state["in_file"]:
            state["found"] = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["in_file"]:
            out.append(data[start:end])

    def on_part_end() -> None:
        if state["in_file"]:
            state["in_file"] = False
            state["done"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in chunks:
            parser.write(chunk)
            if out:
                yield b"".join(out)
                out.clear()
            if state["done"]:
                return  # the rest of the body is other fields; no need to parse it
        parser.finalize()
    except MultipartParseError as exc:
        raise Unprocessable(f"Malformed multipart body: {exc}", code="INVALID_MULTIPART") from exc
    if out:
        yield b"".join(out)
    if not state["found"]:
        raise Unprocessable(f"The form has no file field `{field}`", code="MISSING_FILE")
