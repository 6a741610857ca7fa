"""JSON as the bundle format reads and hashes it: strict I-JSON parsing, and RFC 8785 canonical bytes.

A manifest's content digest must come out the same in every language, so from format 1.4 it is
the sha256 of the JSON Canonicalization Scheme (RFC 8785): keys sorted by UTF-16 code units, no
whitespace, ECMAScript number formatting (``0`` and ``0.0`` are one number), minimal string
escapes, UTF-8. RFC 8785 is defined for I-JSON (RFC 7493), which ``parse_strict`` enforces:
no duplicate keys, no lone surrogates, no NaN or Infinity, integers exact as doubles.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["StrictJSONError", "parse_strict", "canonical_json", "MAX_SAFE_INTEGER"]

MAX_SAFE_INTEGER = 2**53 - 1  # I-JSON: integers a double holds exactly


class StrictJSONError(ValueError):
    """The text is not I-JSON; the message says why (one line)."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # find the first key given twice, to name it
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJSONError(f"the key {key!r} appears twice in one object")
            seen.add(key)
    return out


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number")


def _integer(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise StrictJSONError(f"the integer {text[:30]} is beyond ±(2^53-1), which a double cannot hold exactly")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"the number {text[:30]} is beyond the range of a double")
    return value


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # the escape of a UTF-16 surrogate, paired or not


def _check_strings(value: Any) -> None:
    """Refuse a lone surrogate (``"\\ud800"``) in any key or string: it is no Unicode text."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise StrictJSONError(f"the string {v[:40]!r} holds a lone surrogate, which is not Unicode text") from None
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def parse_strict(data: bytes, *, numbers: bool = True) -> Any:
    """Parse UTF-8 I-JSON (RFC 7493); ``StrictJSONError`` (a ``ValueError``) names the first problem.

    ``numbers=False`` leaves integers and numbers unchecked (for text whose numbers are checked
    otherwise, such as a safetensors header: parsing is several times faster without the hooks).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"byte {exc.start} is not UTF-8") from None
    hooks: dict[str, Any] = {"parse_int": _integer, "parse_float": _float} if numbers else {}
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, **hooks)
    except StrictJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise StrictJSONError("it is nested too deeply") from None
    if "\\u" in text and _SURROGATE.search(text):  # raw UTF-8 cannot hold a surrogate: only an escape can
        _check_strings(value)
    return value


# --- RFC 8785 ---------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(x: int | float) -> str:
    """ECMAScript's Number::toString of the double ``x`` (RFC 8785 section 3.2.2.3)."""
    if isinstance(x, int):
        if abs(x) <= 2**53:
            return str(x)
        x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{x} has no JSON form")
    if x == 0:
        return "0"
    from decimal import Decimal  # here, not at import: loading a bundle needs no canonical form of a number

    sign = "-" if x < 0 else ""
    # repr gives the shortest digits that read back as x, the closest of them to x: ECMAScript's choice too
    _, digit_tuple, exponent = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")
    exponent = int(exponent) + len(digits) - len(stripped)
    digits, k = stripped, len(stripped)
    n = exponent + k  # x = 0.digits x 10^n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        body = "0." + "0" * -n + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        body = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, (int, float)):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys are strings, not {type(key).__name__}")
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    else:
        raise TypeError(f"{type(value).__name__} has no JSON form")


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 (JSON Canonicalization Scheme) bytes of a JSON value.

    Example:
        >>> canonical_json({"b": [1.0, 1e21], "a": "é"})
        b'{"a":"\\xc3\\xa9","b":[1,1e+21]}'
    """
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")
