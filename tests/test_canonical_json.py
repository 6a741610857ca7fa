"""RFC 8785 canonical JSON and strict I-JSON parsing, against the RFC's own examples."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from sowmeta.bundle.canonical_json import StrictJSONError, canonical_json, parse_strict
from sowmeta.bundle.manifest import content_digest

# RFC 8785, Appendix B: IEEE 754 doubles (hex) and the text ECMAScript writes for them
NUMBERS = {
    "0000000000000000": "0", "8000000000000000": "0", "0000000000000001": "5e-324", "8000000000000001": "-5e-324",
    "7fefffffffffffff": "1.7976931348623157e+308", "ffefffffffffffff": "-1.7976931348623157e+308",
    "4340000000000000": "9007199254740992", "c340000000000000": "-9007199254740992", "4430000000000000": "295147905179352830000",
    "44b52d02c7e14af5": "9.999999999999997e+22", "44b52d02c7e14af6": "1e+23", "44b52d02c7e14af7": "1.0000000000000001e+23",
    "444b1ae4d6e2ef4e": "999999999999999700000", "444b1ae4d6e2ef4f": "999999999999999900000", "444b1ae4d6e2ef50": "1e+21",
    "3eb0c6f7a0b5ed8c": "9.999999999999997e-7", "3eb0c6f7a0b5ed8d": "0.000001", "41b3de4355555553": "333333333.3333332",
    "41b3de4355555554": "333333333.33333325", "41b3de4355555555": "333333333.3333333", "41b3de4355555556": "333333333.3333334",
    "41b3de4355555557": "333333333.33333343", "becbf647612f3696": "-0.0000033333333333333333", "43143ff3c1cb0959": "1424953923781206.2",
}


@pytest.mark.parametrize(("bits", "text"), list(NUMBERS.items()))
def test_numbers_are_written_as_ecmascript_writes_them(bits: str, text: str):
    (x,) = struct.unpack(">d", bytes.fromhex(bits))
    assert canonical_json(x) == text.encode()


def test_the_rfc_example_and_its_key_order():
    """RFC 8785 section 3.2.2 (values) and 3.2.3 (keys sorted by UTF-16 code units: the emoji before U+FB33)."""
    values = b'{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], ' \
             b'"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}'
    expect = '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonical_json(parse_strict(values)) == expect.encode()
    keys = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
            "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}
    order = [k for k in json.loads(canonical_json(keys))]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_the_1_4_digest_ignores_number_spelling_and_the_legacy_one_does_not():
    a, b = {"x": 0, "y": [1.5e3], "files": []}, {"x": 0.0, "y": [1500], "files": [{"other": 1}]}
    assert content_digest(a, "1.4") == content_digest(b, "1.4") == hashlib.sha256(b'{"x":0,"y":[1500]}').hexdigest()
    assert content_digest(a, "1.3") != content_digest(b, "1.3")
    assert content_digest(a, "1.3") == hashlib.sha256(b'{"x":0,"y":[1500.0]}').hexdigest()


@pytest.mark.parametrize(("text", "why"), [
    (b'{"a": 1, "a": 2}', "the key 'a' appears twice"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"a": 1e400}', "beyond the range of a double"),
    (b'{"a": 9007199254740993}', r"beyond ±\(2\^53-1\)"),
    (b'{"a": "\\ud800"}', "lone surrogate"),
    (b'{"a": "\xe9"}', "byte 7 is not UTF-8"),
    (b'\xef\xbb\xbf{"a": 1}', "BOM"),
    (b'{"a": [1, 2', "Expecting"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_strict_parsing_refuses_what_i_json_forbids(text: bytes, why: str):
    with pytest.raises(StrictJSONError, match=why):
        parse_strict(text)
