"""Text read from files — a manifest's labels and names, file names, paths — shown on the terminal as text.

A label holding an escape byte could otherwise move the cursor, retitle or clear the terminal,
and one holding ``[red]`` would be taken for rich markup. Control characters (and the
bidirectional overrides that reorder what is shown) are written as Python escapes (``\\x1b``).
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape

__all__ = ["printable", "shown"]

# Unicode's bidirectional embeddings, overrides and isolates: they reorder the text after them
_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def printable(text: object) -> str:
    """``text`` with every control character and bidirectional control as a visible escape (``\\x1b``, ``\\u202e``)."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if code in _BIDI or unicodedata.category(ch) == "Cc":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def shown(text: object) -> str:
    """``printable(text)`` for a rich console: its square brackets are not taken for markup."""
    return escape(printable(text))
