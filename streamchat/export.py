"""Conversations and a user's data as files: a conversation as Markdown (the branch the page shows,
to read) or as JSON (the whole message tree, every branch, each reply's usage), and one user's
conversations, usage and tokens as JSON for a data request (admin).

The functions take what ``streamchat.views.conversation_tree`` returns, so the files say exactly
what the JSON API says. Markdown is for reading, not for round-tripping: message text goes in as
written (it is the user's and the model's Markdown); JSON is the faithful copy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from .models import Message, PersonalToken, Usage
from .pricing import usd

# Bumped when a field's meaning changes, so scripts reading old files can tell.
FORMAT_VERSION = 1


def filename(conversation: dict[str, Any], extension: str) -> str:
    """``streamchat-7-pelicans.md``: ASCII only, so every browser keeps it as given."""
    slug = slugify(conversation.get("title") or "")[:60].strip("-") or "conversation"
    return f"streamchat-{conversation['id']}-{slug}.{extension}"


def _when(value: str | None) -> str:
    """An ISO timestamp from the tree, in the site's time zone, to the minute."""
    if not value:
        return ""
    moment = timezone.localtime(datetime.fromisoformat(value))
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def _usage_line(usage: dict[str, Any]) -> str:
    return _("%(prompt)s tokens in, %(completion)s out, %(cost)s") % {
        "prompt": f"{usage['prompt_tokens']:,}",
        "completion": f"{usage['completion_tokens']:,}",
        "cost": usd(usage["cost"]),
    }


def conversation_markdown(tree: dict[str, Any]) -> str:
    """The conversation's current branch (what the page shows) as Markdown: the title, then each
    message under a heading with its role, model and time, then a reply's tokens and cost."""
    by_id = {message["id"]: message for message in tree["messages"]}
    roles = {
        Message.Role.USER: _("You"),
        Message.Role.ASSISTANT: _("Assistant"),
        Message.Role.SYSTEM: _("System"),
    }
    title = tree.get("title") or _("New chat")
    lines = [f"# {title}", ""]
    if tree.get("model"):
        lines.append(_("- Model: %(model)s") % {"model": tree["model"]})
    lines.append(_("- Started: %(when)s") % {"when": _when(tree.get("created"))})
    lines.append(_("- Exported: %(when)s") % {"when": _when(timezone.now().isoformat())})
    for pk in tree.get("branch", []):
        message = by_id[pk]
        heading = [roles.get(message["role"], message["role"])]
        if message["role"] == Message.Role.ASSISTANT and message.get("model"):
            heading.append(message["model"])
        heading.append(_when(message.get("created")))
        lines += ["", "## " + " · ".join(part for part in heading if part), ""]
        lines.append(message["content"].rstrip() or _("*(no text)*"))
        notes = []
        if message["status"] not in (Message.Status.COMPLETE, ""):
            notes.append(_("status: %(status)s") % {"status": message["status"]})
        if message.get("error"):
            notes.append(_("error: %(message)s") % {"message": message["error"]["message"]})
        if message.get("usage"):
            notes.append(_usage_line(message["usage"]))
        if message.get("sibling_count", 1) > 1:
            notes.append(
                _("version %(index)s of %(count)s")
                % {"index": message["sibling_index"], "count": message["sibling_count"]}
            )
        if notes:
            lines += ["", "*" + "; ".join(notes) + "*"]
    return "\n".join(lines) + "\n"


def usage_record(row: Usage) -> dict[str, Any]:
    """One upstream request of the ledger, as exported (no API key, only its id)."""
    return {
        "id": row.pk,
        "message": row.message_id,
        "source": row.source,
        "model_requested": row.model_requested,
        "model_used": row.model_used,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost": format(row.cost.normalize(), "f") if row.cost else "0",
        "cost_source": row.cost_source,
        "outcome": row.outcome,
        "error_code": row.error_code,
        "time_to_first_token_ms": row.time_to_first_token_ms,
        "duration_ms": row.duration_ms,
        "generation_id": row.generation_id,
        "created": row.created.isoformat(),
    }


def conversation_document(tree: dict[str, Any]) -> dict[str, Any]:
    """The whole conversation as JSON: the API's tree (every branch, ``usage`` summed per reply)
    plus each reply's upstream requests (``usage_records``)."""
    rows: dict[int, list[dict[str, Any]]] = {}
    ids = [message["id"] for message in tree["messages"]]
    for row in Usage.objects.filter(message_id__in=ids).order_by("id"):
        rows.setdefault(row.message_id or 0, []).append(usage_record(row))
    messages = [{**m, "usage_records": rows.get(m["id"], [])} for m in tree["messages"]]
    return {
        "format": "streamchat.conversation",
        "version": FORMAT_VERSION,
        "exported": timezone.now().isoformat(),
        **tree,
        "messages": messages,
    }


def user_document(user: Any, trees: list[dict[str, Any]]) -> dict[str, Any]:
    """What streamchat holds about ``user`` (a data request): their conversations (``trees``,
    each as ``conversation_document``), every usage row (those of deleted conversations too) and
    their personal tokens (names and prefixes; a token itself is never stored)."""
    User = get_user_model()
    joined = getattr(user, "date_joined", None)  # a custom user model may have none
    tokens = PersonalToken.objects.filter(user=user).order_by("created", "id")
    usage = Usage.objects.filter(user=user).order_by("created", "id")
    return {
        "format": "streamchat.user",
        "version": FORMAT_VERSION,
        "exported": timezone.now().isoformat(),
        "user": {
            "id": user.pk,
            "username": user.get_username(),
            "email": getattr(user, User.get_email_field_name(), "") or "",
            "date_joined": joined.isoformat() if joined else None,
        },
        "conversations": [conversation_document(tree) for tree in trees],
        "usage": [usage_record(row) for row in usage],
        "tokens": [
            {
                "name": token.name,
                "prefix": token.prefix,
                "created": token.created.isoformat(),
                "last_used": token.last_used.isoformat() if token.last_used else None,
                "expires": token.expires.isoformat() if token.expires else None,
                "revoked": token.revoked.isoformat() if token.revoked else None,
            }
            for token in tokens
        ],
    }
