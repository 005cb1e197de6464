"""Signals for host projects. Receivers may be sync or async; they run after the rows are stored.

- ``reply_finished(sender=Message, message=Message, usage=Usage | None)``: a reply ended, however it
  ended (``message.status`` says how). Fired once per reply, in the worker that ran it.
- ``usage_recorded(sender=Usage, usage=Usage)``: a usage ledger row was written (one per upstream
  request).
"""

from django.dispatch import Signal

reply_finished = Signal()
usage_recorded = Signal()
