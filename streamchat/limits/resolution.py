"""Which limits apply to a user: their own row, else their groups', else the site default."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Q

from ..models import RateLimit

LIMIT_FIELDS: tuple[str, ...] = RateLimit.LIMIT_FIELDS


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits that apply to one user; None means unlimited.

    ``scope`` says which rows decided: "user", "group", "default", or None (no row: unlimited).
    """

    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    spend_per_month: Decimal | None = None
    concurrent_streams: int | None = None
    scope: str | None = None

    @property
    def unlimited(self) -> bool:
        return all(getattr(self, name) is None for name in LIMIT_FIELDS)

    def as_dict(self) -> dict[str, Any]:
        """The five limits by field name (the keys of ``consumption``)."""
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


def effective_limits(user: Any) -> EffectiveLimits:
    """The user's limits. The most specific scope with a row decides every field:

    1. the user's own row;
    2. else the rows of the user's groups: per field the most generous value, and blank
       (unlimited) is the most generous;
    3. else the site default row;
    4. else unlimited.

    A blank field means unlimited wherever it is: it never falls through to a wider scope.
    """
    if not getattr(user, "pk", None):
        return _from_row(RateLimit.objects.filter(scope=RateLimit.Scope.DEFAULT).first())
    by_scope: dict[str, list[RateLimit]] = {}
    for row in RateLimit.objects.filter(
        Q(scope=RateLimit.Scope.USER, user_id=user.pk)
        | Q(scope=RateLimit.Scope.GROUP, group__in=_group_ids(user))
        | Q(scope=RateLimit.Scope.DEFAULT)
    ):
        by_scope.setdefault(row.scope, []).append(row)
    if own := by_scope.get(RateLimit.Scope.USER):
        return _from_row(own[0])
    if groups := by_scope.get(RateLimit.Scope.GROUP):
        values: dict[str, Any] = {}
        for name in LIMIT_FIELDS:
            candidates = [getattr(row, name) for row in groups]
            values[name] = None if None in candidates else max(candidates)
        return EffectiveLimits(**values, scope=RateLimit.Scope.GROUP)
    return _from_row(next(iter(by_scope.get(RateLimit.Scope.DEFAULT, [])), None))


def effective_limits_from(rules: dict[str, Any], user: Any) -> EffectiveLimits:
    """``effective_limits`` from a snapshot of every rule (``snapshots.limit_rules``): the same
    answer, and no query unless group rules exist (then one, for the user's groups)."""
    own = rules["user"].get(getattr(user, "pk", None))
    if own is not None:
        return _from_row(own)
    if rules["group"] and getattr(user, "pk", None):
        groups = [rules["group"][pk] for pk in _group_ids(user) if pk in rules["group"]]
        if groups:
            values: dict[str, Any] = {}
            for name in LIMIT_FIELDS:
                candidates = [getattr(row, name) for row in groups]
                values[name] = None if None in candidates else max(candidates)
            return EffectiveLimits(**values, scope=RateLimit.Scope.GROUP)
    return _from_row(rules["default"])


async def aeffective_limits(user: Any) -> EffectiveLimits:
    limits: EffectiveLimits = await database_sync_to_async(effective_limits)(user)
    return limits


def _group_ids(user: Any) -> Any:
    groups = getattr(user, "groups", None)  # a custom user model may have no groups
    return groups.values_list("pk", flat=True) if groups is not None else []


def _from_row(row: RateLimit | None) -> EffectiveLimits:
    if row is None:
        return EffectiveLimits()
    return EffectiveLimits(**{name: getattr(row, name) for name in LIMIT_FIELDS}, scope=row.scope)
