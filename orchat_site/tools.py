"""The demo's tools: what "Give the model your site's functions" (README) looks like in a site.

Registered by ``DemoSiteConfig.ready``. Staff only (the default permission): a staff user asking
"how many conversations do I have?" sees the model call ``count_my_conversations``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamchat.models import Conversation
from streamchat.tools import tool

DOCS = Path(__file__).resolve().parent.parent / "docs"


@tool
def count_my_conversations(user: Any) -> int:
    """How many conversations the user asking has."""
    return Conversation.objects.filter(owner=user).count()


@tool
def search_docs(query: str, limit: int = 3) -> list[dict[str, str]]:
    """Search streamchat's documentation (docs/*.md) for a word or phrase; the matching lines
    with their file names."""
    needle = query.strip().lower()
    found: list[dict[str, str]] = []
    if not needle:
        return found
    for path in sorted(DOCS.glob("*.md")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if needle in line.lower():
                found.append({"file": f"docs/{path.name}:{number}", "line": line.strip()[:300]})
                if len(found) >= max(1, min(limit, 20)):
                    return found
    return found
