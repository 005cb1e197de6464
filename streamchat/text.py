"""One rule for awkward characters, applied to user messages and upstream deltas alike.

NUL characters (PostgreSQL text cannot hold them) and lone UTF-16 surrogates (not encodable as
UTF-8) are removed; everything else is kept as it came. SQLite and PostgreSQL then store the same
text, and a reply is never lost because of a character in it.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` without NUL characters and lone surrogates (fast path when there are none)."""
    if text.isascii():
        return text.replace("\x00", "") if "\x00" in text else text
    return _UNSTORABLE.sub("", text)
