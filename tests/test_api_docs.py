"""docs/api.md stays true: it names every exported name, and every exported name exists."""

from __future__ import annotations

import re
from pathlib import Path

import sowmeta


def test_api_page_names_every_export():
    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [n for n in sowmeta.__all__ if not re.search(rf"`{re.escape(n)}[`(.]", text)]
    assert missing == [], f"docs/api.md does not mention {missing}"
    assert all(hasattr(sowmeta, n) for n in sowmeta.__all__)
