"""A safetensors file's header, read and checked as strictly as the safetensors library checks it.

A safetensors file is 8 bytes (little-endian header length *n*), *n* bytes of UTF-8 JSON (tensor
name -> ``dtype``, ``shape``, ``data_offsets``, plus an optional ``__metadata__`` of strings), then
the tensors' bytes. The library refuses a header that does not fit the file, a tensor whose
byte length is not its shape times its dtype's size, and offsets that do not tile the data
exactly (a gap, an overlap, or a byte after the last tensor). So does this reader, and it also
refuses a name given twice. Only the header is read: the tensors are read by offset later.
"""

from __future__ import annotations

import io
import math
import os
from typing import NamedTuple

from .canonical_json import StrictJSONError, parse_strict

__all__ = ["Entry", "LayoutError", "DTYPE_SIZES", "MAX_HEADER", "read_header", "read_at"]

MAX_HEADER = 100_000_000  # safetensors' own limit
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}
_PREADV = hasattr(os, "preadv")


class LayoutError(ValueError):
    """The file is not valid safetensors; the message says where (one line)."""


class Entry(NamedTuple):
    """Where one tensor lies in its file, as its header says (absolute byte offsets)."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_at(f: io.FileIO, offset: int, into: memoryview) -> None:
    """Fill ``into`` with the file's bytes from ``offset`` on (``pread``: no seek); ``ValueError`` when the file ends first."""
    done = 0
    while done < len(into):
        if _PREADV:
            got = os.preadv(f.fileno(), [into[done:]], offset + done)
        else:
            f.seek(offset + done)
            got = f.readinto(into[done:]) or 0
        if not got:
            raise ValueError(f"the file ends before byte {offset + len(into)}")
        done += got


def _entry(key: str, info: object, base: int) -> Entry:
    if not isinstance(info, dict):
        raise LayoutError(f"the header's entry {key!r} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise LayoutError(f"{key!r} has dtype {dtype!r}, which safetensors does not define")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise LayoutError(f"{key!r} has shape {shape!r}, not a list of sizes")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]:
        raise LayoutError(f"{key!r} has data_offsets {offsets!r}, not [start, end] with 0 <= start <= end")
    start, end = offsets
    if end - start != math.prod(shape) * DTYPE_SIZES[dtype]:
        raise LayoutError(f"{key!r} spans {end - start} bytes, but {dtype} {shape} takes {math.prod(shape) * DTYPE_SIZES[dtype]}")
    return Entry(dtype, tuple(shape), base + start, base + end)


def read_header(f: io.FileIO, size: int) -> tuple[dict[str, Entry], dict[str, str]]:
    """The tensor table and the ``__metadata__`` of an open safetensors file of ``size`` bytes; ``LayoutError`` if invalid."""
    if size < 8:
        raise LayoutError(f"it has {size} bytes, fewer than the 8 of the header length")
    head = bytearray(8)
    read_at(f, 0, memoryview(head))
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER or n > size - 8:
        raise LayoutError(f"its header length {n} does not fit a file of {size} bytes (nor the limit of {MAX_HEADER})")
    text = bytearray(n)
    read_at(f, 8, memoryview(text))
    if not text.startswith(b"{"):
        raise LayoutError("its header does not start with '{'")
    try:
        table = parse_strict(bytes(text), numbers=False)  # offsets and shapes are checked below
    except StrictJSONError as exc:
        raise LayoutError(f"its header is not valid JSON: {exc}") from None
    if not isinstance(table, dict):
        raise LayoutError("its header is not a JSON object")
    meta = table.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise LayoutError("its __metadata__ is not a map of strings to strings")
    base = 8 + n
    entries = {key: _entry(key, info, base) for key, info in table.items()}
    at = base
    for key, e in sorted(entries.items(), key=lambda item: (item[1].start, item[1].end)):
        if e.start != at:
            what = "overlaps the tensor before it" if e.start < at else f"leaves a gap of {e.start - at} bytes before it"
            raise LayoutError(f"{key!r} starts at data byte {e.start - base}: it {what}")
        at = e.end
    if at > size:
        raise LayoutError(f"its tensors run to byte {at}, past the end of the file ({size} bytes)")
    if at < size:
        raise LayoutError(f"its tensors end at byte {at} of {size}: {size - at} bytes follow them")
    return entries, meta
