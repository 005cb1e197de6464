"""Per-user rate limits and budgets, checked before every upstream request: reserve, then settle.

Every entry point (websocket, SSE, the OpenAI-compatible API, Python) calls ``reserve`` /
``areserve`` before it calls OpenRouter, and ``settle`` or ``release`` when the request is over.
docs/limits.md explains the limits to admins.

What this package guarantees, across threads, workers and processes that share the database:

- **Exact admission.** One user's admissions run one at a time: each starts by writing that
  user's ``LimitLock`` row inside a transaction, then counts and inserts its ``Reservation``
  before committing. On PostgreSQL the write takes the row lock (admissions of the same user wait
  for it; other users are not held up); on SQLite it takes the database's write lock, which the
  busy timeout waits for. Writing *first* matters on SQLite: a transaction that read first would
  hold a shared lock it cannot upgrade while another admission waits ("database is locked"). So
  with a limit of K, N concurrent sends admit exactly K.
- **Budgets never overbooked.** An open reservation counts its worst case (prompt estimate plus
  ``max_tokens``, at the model's prices) against the token and spend budgets, so the spend
  admitted never exceeds the budget however many replies run at once. Settling replaces the worst
  case with the real figures: the difference is released at once; an overrun is recorded and
  blocks the next send. With unknown prices only tokens are reserved, and a send is admitted while
  spend is below the budget.
- **Slots are never lost.** A reservation holds a concurrent-stream slot until it is settled or
  released, and at most until its lease ``expires``: a worker that dies cannot block its user for
  longer. An expired reservation keeps counting its worst case against the budgets (the upstream
  call may have been billed) until it is settled.
- **Settled exactly once.** ``settle`` and ``release`` are one conditional update of an open
  reservation: a second call (stop, disconnect and regenerate of one reply) changes nothing.
- **Fail closed.** When the database fails, sends are refused with ``LimitsUnavailable`` (code
  ``limits_unavailable``), unless the ``LIMITS_FAIL_OPEN`` setting admits them.

Call ``reserve`` outside the caller's own transaction: inside one, the user's lock is held until
that transaction ends.
"""

from .admission import (
    admit,
    areap_expired,
    arelease,
    arenew,
    areserve,
    asettle,
    reap_expired,
    release,
    renew,
    reserve,
    settle,
    worst_case_cost,
)
from .exceptions import LimitError, LimitExceeded, LimitsUnavailable
from .ledger import aconsumption, consumption, period_starts
from .resolution import LIMIT_FIELDS, EffectiveLimits, aeffective_limits, effective_limits

__all__ = [
    "LIMIT_FIELDS",
    "EffectiveLimits",
    "LimitError",
    "LimitExceeded",
    "LimitsUnavailable",
    "aconsumption",
    "aeffective_limits",
    "admit",
    "areap_expired",
    "arelease",
    "arenew",
    "areserve",
    "asettle",
    "consumption",
    "effective_limits",
    "period_starts",
    "reap_expired",
    "release",
    "renew",
    "reserve",
    "settle",
    "worst_case_cost",
]
