"""SMS text handling: encodings and segments (the send endpoint and the saga build on it)."""

from messaging.sms.segments import (
    GSM7,
    MAX_CHARS,
    UCS2,
    InvalidSmsText,
    SegmentInfo,
    analyse,
)

__all__ = ["GSM7", "MAX_CHARS", "UCS2", "InvalidSmsText", "SegmentInfo", "analyse"]
