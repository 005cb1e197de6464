"""Personal API tokens: bearer tokens a user makes for the OpenAI-compatible API.

A token is ``sc-`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 hash is
stored: a fast hash is enough for a secret with that much entropy (nothing to brute-force), and it
lets a request find its token with one indexed lookup. The token is shown once, when it is made;
``prefix`` (its first characters) identifies it afterwards in lists.

A token authenticates its user while it is neither revoked nor expired and the user is active.
``last_used`` is updated at most once a minute per token, so a busy client does not write on every
request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .models import PersonalToken

TOKEN_PREFIX = "sc-"
PREFIX_CHARS = 10  # what lists show: "sc-" and 7 characters of the token
LAST_USED_EVERY = timedelta(minutes=1)


class TokenError(Exception):
    """The bearer token is missing, unknown, revoked or expired, or its user is inactive.

    The message is fit to show the client; it does not say which of these applies to an unknown
    token (nothing to learn by guessing)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@sensitive_variables("token")
def create_token(
    user: Any, name: str, *, expires: datetime | None = None
) -> tuple[PersonalToken, str]:
    """Make a token for ``user``: (its row, the token). The token cannot be recovered later."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = PersonalToken.objects.create(
        user=user,
        name=name,
        prefix=token[:PREFIX_CHARS],
        token_hash=hash_token(token),
        expires=expires,
    )
    return row, token


def revoke(tokens: Any) -> int:
    """Revoke the tokens of a queryset that are not revoked yet; how many were."""
    return int(tokens.filter(revoked__isnull=True).update(revoked=timezone.now()))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


@sensitive_variables("token")
def authenticate(token: str | None) -> Any:
    """The user a token belongs to, or ``TokenError``."""
    if not token:
        raise TokenError("Missing bearer token: send Authorization: Bearer <your token>.")
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        raise TokenError("Invalid token.")
    row = PersonalToken.objects.select_related("user").filter(token_hash=hash_token(token)).first()
    if row is None:
        raise TokenError("Invalid token.")
    if row.revoked is not None:
        raise TokenError("This token was revoked.")
    now = timezone.now()
    if row.expires is not None and row.expires <= now:
        raise TokenError("This token has expired.")
    if not row.user.is_active:
        raise TokenError("Invalid token.")
    if row.last_used is None or row.last_used < now - LAST_USED_EVERY:
        PersonalToken.objects.filter(pk=row.pk).update(last_used=now)
    return row.user


async def aauthenticate(token: str | None) -> Any:
    return await database_sync_to_async(authenticate)(token)
