"""One running reply: upstream deltas in; followers, checkpoints and one final write out.

The hot path (``_consume``) appends each delta to an in-memory list and hands it to the local
followers; nothing per delta touches the database, the channel layer or the log. A ticker saves
the text added since the last checkpoint every ``CHECKPOINT_MS`` (renewing the row's and the limit
reservation's leases in the same trip) and, once a follower on another worker watches, publishes
new text every ``GROUP_BATCH_MS``. The end is one database trip: the final row, the usage row and
the settled reservation. Every database trip runs on the engine's own threads (``db``), so one
reply's I/O never waits behind another's.

Stored replies and API exchanges that are not stored run the same way; what differs is their
``record`` (``store.StoredReply`` or ``store.UnstoredExchange``).

Front ends never see this class: they get a ``Reply`` handle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from .. import keys as key_store
from .. import signals
from ..conf import app_settings
from ..exceptions import ChatError, StreamchatError
from ..models import Message, Usage
from ..openrouter.client import ChatStream, open_stream
from ..openrouter.errors import OpenRouterError
from ..openrouter.events import (
    ContentDelta,
    Finish,
    ReasoningDelta,
    ToolCall,
    ToolCallDelta,
    UsageReport,
    assemble_tool_calls,
)
from . import db, frames, layer, store
from .events import Finished, Follower, UsageFigures, error_from
from .hub import Hub, conversation_group, reply_group

if TYPE_CHECKING:
    from .plan import Plan

logger = logging.getLogger("streamchat.streaming")


class ReplyRun:
    def __init__(self, hub: Hub, plan: Plan) -> None:
        self.hub = hub
        self.plan = plan
        self.record = plan.record
        self.reply_id = plan.record.reply_id
        self.user_id = plan.user_id
        self.model = plan.choice
        self.request = plan.request
        self.followers: set[Follower] = set()
        self.watched = False  # a follower on another worker asked for batches
        self._watch_asked = asyncio.Event()
        self.text: list[str] = []
        self.length = 0  # code points of reply text so far
        self.reasoning: list[str] = []
        self.reasoning_length = 0
        # Tool-call fragments as they came (the API relays them; ``Reply.tool_calls`` joins them)
        # and the followers that take them: those with a ``tool_call`` method (the chat has none).
        self.tool_fragments: list[ToolCallDelta] = []
        self.tool_length = 0
        self._tool_followers: dict[Follower, Callable[[ToolCallDelta], None]] = {}
        self.saved_length = 0  # text confirmed in the database (the base of published batches)
        self.saved_reasoning = 0
        self.status = Message.Status.STREAMING
        self.finish: Finish | None = None
        self.usage: UsageReport | None = None
        self.error: StreamchatError | None = None
        self.stream: ChatStream | None = None
        self.stopping = False
        self.interrupted = False  # ended by a worker that stops (drain), not by the user
        self.started_at = time.monotonic()
        self.first_token_at: float | None = None
        self.result: Finished | None = None
        self.done = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        # Tool rounds (chat replies offered the server's tools, ``plan.tools``): the upstream
        # request this is (1, 2, …), where it began, its frames for late followers, the calls
        # of a round not stored yet, and the decisions awaited from the user.
        self.step = 1
        self.step_started_at = self.started_at
        self._step_text = 0  # self.length when this step began
        self._step_reasoning = 0
        self._step_fragments = 0
        self._step_stored = False  # the last step's usage row is stored (the next was refused)
        self.tool_frames: list[dict[str, Any]] = []
        self._round_rows: list[dict[str, Any]] = []
        self._decisions: dict[str, asyncio.Future[bool]] = {}
        self._totals: list[dict[str, Any]] = []  # usage fields of the steps stored so far

    # -- followers -----------------------------------------------------------------------------

    def follow(self, follower: Follower, offset: int = 0) -> None:
        """Send the text from ``offset`` at once, then every later delta (no gap, no repeat)."""
        if offset < self.length:
            follower.push("delta", offset, self.text_from(offset))
        if self.reasoning_length:
            follower.push("reasoning", 0, "".join(self.reasoning))
        self.followers.add(follower)
        take = getattr(follower, "tool_call", None)
        if take is not None:
            for fragment in self.tool_fragments:
                take(fragment)
            self._tool_followers[follower] = take
        if self.tool_frames:  # the steps so far (a resume during a reply with tool calls)
            self.hub.spawn(self._replay(follower, list(self.tool_frames)))

    async def _replay(self, follower: Follower, frames_so_far: list[dict[str, Any]]) -> None:
        send = getattr(follower, "event", None)
        if send is not None:
            for frame in frames_so_far:
                await send(frame)

    def unfollow(self, follower: Follower) -> None:
        self.followers.discard(follower)
        self._tool_followers.pop(follower, None)

    def text_from(self, offset: int) -> str:
        return "".join(self.text)[offset:]

    def watch(self) -> None:
        """A follower on another worker asked for batches of new text (from now on)."""
        self.watched = True
        self._watch_asked.set()

    # -- control -------------------------------------------------------------------------------

    def start(self) -> None:
        self.hub.add(self)  # at once: a stop that arrives before the task first runs finds it
        self.hub.spawn(self._run())

    def stop(self) -> None:
        """Close upstream at once; the partial text is kept with status ``stopped``."""
        if self.stopping or self.done.is_set():
            return
        self.stopping = True
        if self._consumer is not None:
            self._consumer.cancel()

    def decide(self, call_id: str, approve: bool) -> bool:
        """The user's decision on a tool call waiting for it; False when none waits."""
        waiting = self._decisions.get(call_id)
        if waiting is None or waiting.done():
            return False
        waiting.set_result(approve)
        return True

    def interrupt(self) -> None:
        """The worker stops (a drain that ran out of time): close upstream; the text so far is
        kept with status ``interrupted`` and every follower is told."""
        if self.stopping or self.done.is_set():
            return
        self.interrupted = True
        self.stop()

    # -- the reply -----------------------------------------------------------------------------

    async def _run(self) -> None:
        # Upstream first: nothing stands between admission and the request.
        self._consumer = asyncio.get_running_loop().create_task(self._consume())
        if self.stopping:
            # Stopped before it began (``stop`` finds no consumer to cancel until here): it
            # never calls upstream, instead of streaming a whole reply nobody wants.
            self._consumer.cancel()
        ticker = self.hub.spawn(self._tick())
        try:
            try:
                await asyncio.wait_for(asyncio.shield(self._consumer), app_settings.TOTAL_TIMEOUT)
            except TimeoutError:
                self.error = OpenRouterError(
                    "total_timeout", "The reply took too long and was cut off."
                )
                self._consumer.cancel()
            except asyncio.CancelledError:
                if not self.stopping:
                    raise
            if not self._consumer.done():
                try:
                    await self._consumer
                except asyncio.CancelledError:
                    pass
        finally:
            ticker.cancel()
            try:
                await self._finalize()
            finally:
                self.hub.remove(self)
                self.done.set()

    async def _consume(self) -> None:
        try:
            if not self.plan.keys:  # say why: none configured, or none decrypts (a rare path)
                raise OpenRouterError("no_api_key", await key_store.ano_key_message())
            while True:
                await self._stream_step()
                calls = self._tool_round()
                if not calls:
                    break
                await self._run_tools(calls)
                await self._next_step()
        except OpenRouterError as error:
            self.error = error
        except ChatError as error:  # the next step was refused (a limit)
            self.error = error
        except asyncio.CancelledError:
            if not self.stopping:
                self.error = OpenRouterError(
                    "total_timeout", "The reply took too long and was cut off."
                )
        except Exception as error:  # never leave a reply streaming forever
            logger.exception("streamchat: reply %s failed", self.record.label)
            self.error = OpenRouterError(
                "internal_error", f"The reply failed ({type(error).__name__})."
            )

    async def _stream_step(self) -> None:
        """One upstream request, its deltas pushed as they come (the hot path)."""
        self.stream = stream = await open_stream(
            self.request,
            self.plan.keys,
            on_key_failure=_record_key_failure,
            on_open=self._opened,
        )
        try:
            # Text and reasoning are each kept within MAX_REPLY_CHARS (the last delta is cut
            # to fit), so a reply's memory and stored size are bounded whatever upstream sends.
            limit = app_settings.MAX_REPLY_CHARS
            async for event in stream:
                kind = type(event)
                if kind is ContentDelta:
                    text = event.text  # type: ignore[union-attr]
                    room = limit - self.length
                    self._append(text if len(text) < room else text[:room])
                    if len(text) >= room:
                        self.finish = Finish("length", stream.model_requested, stream.generation_id)
                        break
                elif kind is ReasoningDelta:
                    text = event.text  # type: ignore[union-attr]
                    room = limit - self.reasoning_length
                    self._append_reasoning(text if len(text) < room else text[:room])
                    if len(text) >= room:
                        self.finish = Finish("length", stream.model_requested, stream.generation_id)
                        break
                elif kind is ToolCallDelta:
                    fragment: ToolCallDelta = event  # type: ignore[assignment]
                    self.tool_length += len(fragment.arguments)  # bounded like the text
                    if self.tool_length > limit:
                        self.finish = Finish("length", stream.model_requested, stream.generation_id)
                        break
                    self._tool_call(fragment)
                elif kind is UsageReport:
                    self.usage = event  # type: ignore[assignment]
                elif kind is Finish:
                    self.finish = event  # type: ignore[assignment]
        finally:
            await stream.aclose()

    # -- tool rounds (chat replies offered the server's tools) ----------------------------------

    def _tool_round(self) -> list[ToolCall]:
        """The calls to run when this step ended asking for tools; none otherwise (then the reply
        ends). A reply that wants more than MAX_TOOL_STEPS steps ends with ``tool_steps``."""
        if not self.plan.tools or self.finish is None or self.finish.reason != "tool_calls":
            return []
        calls = assemble_tool_calls(self.tool_fragments[self._step_fragments :])
        if not calls:
            return []
        limit = int(app_settings.MAX_TOOL_STEPS)
        if self.step >= limit:
            self.error = ChatError(
                "tool_steps",
                f"The reply needed more than {limit} steps of tool calls and was stopped.",
            )
            return []
        return calls

    async def _emit(self, frame: dict[str, Any]) -> None:
        """A tool frame to every follower (in order after the text before it), and to other
        workers' followers while one watches."""
        self.tool_frames.append(frame)
        for follower in list(self.followers):
            send = getattr(follower, "event", None)
            if send is not None:
                try:
                    await send(frame)
                except Exception:
                    logger.debug("streamchat: a follower of reply %s went away", self.record.label)
        if self.watched and self.reply_id is not None:
            from channels.layers import get_channel_layer

            try:
                await get_channel_layer().group_send(
                    reply_group(self.reply_id), {"type": "streamchat.tool", "frame": frame}
                )
            except Exception as error:  # they see the stored calls on their next read
                layer.trouble("publishing a tool call to other workers", error)

    async def _run_tools(self, calls: list[ToolCall]) -> None:
        """Run a round of calls (at once, each on its own), then add the assistant's call
        message and the results to the context of the next request."""
        from ..tools import runner

        offset, step = self.length, self.step
        self._round_rows = [
            {
                "step": step,
                "offset": offset,
                "call_id": call.id[:100],
                "tool_name": call.name[:64],
                "arguments": call.arguments,
                "status": "error",
                "error": "stopped",  # replaced by the outcome; kept when the reply stops first
            }
            for call in calls
        ]
        for call in calls:
            await self._emit(
                frames.tool_call(self.reply_id, step, offset, call.id, call.name, call.arguments)
            )
        outcomes = await asyncio.gather(
            *(
                self._one_call(call, row, runner)
                for call, row in zip(calls, self._round_rows, strict=True)
            )
        )
        step_text = self.text_from(self._step_text)
        messages = [
            *self.request.messages,
            {
                "role": "assistant",
                "content": step_text or None,
                "tool_calls": [call.as_openai() for call in calls],
            },
            *(
                {"role": "tool", "tool_call_id": call.id, "content": outcome.content}
                for call, outcome in zip(calls, outcomes, strict=True)
            ),
        ]
        self.request = dataclasses.replace(self.request, messages=messages)

    async def _one_call(self, call: ToolCall, row: dict[str, Any], runner: Any) -> Any:
        prepared = runner.prepare(call, self.plan.tools)
        if isinstance(prepared, runner.Outcome):
            outcome = prepared
        else:
            item, arguments = prepared
            approved = True
            if item.confirm:
                approved = await self._ask(call)
            if approved:
                outcome = await runner.run(item, arguments, self.plan.user)
            else:
                outcome = runner.refused("declined", "the user declined this call.")
        row.update(
            status=outcome.status,
            result=outcome.summary,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
        await self._emit(
            frames.tool_result(
                self.reply_id,
                self.step,
                call.id,
                outcome.status,
                outcome.summary,
                outcome.duration_ms,
            )
        )
        return outcome

    async def _ask(self, call: ToolCall) -> bool:
        """Wait for the user's decision on ``call`` (any worker: ``decide``); a lapse declines."""
        seconds = float(app_settings.TOOL_CONFIRM_SECONDS)
        waiting: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._decisions[call.id] = waiting
        await self._emit(
            frames.tool_confirm(
                self.reply_id, self.step, call.id, call.name, call.arguments, seconds
            )
        )
        try:
            return await asyncio.wait_for(waiting, seconds)
        except TimeoutError:
            return False
        finally:
            self._decisions.pop(call.id, None)

    async def _next_step(self) -> None:
        """Store the step that ended (its calls, its usage row) and admit the next request; a
        refusal (``ChatError``) ends the reply."""
        from .context import estimate_prompt_tokens
        from .plan import next_step

        status = Message.Status.COMPLETE
        model_used = (self.finish.model if self.finish else "") or self.model.model_id
        usage = self._usage_fields(status, model_used, self.text_from(self._step_text))
        calls, self._round_rows = self._round_rows, []
        prompt_tokens = estimate_prompt_tokens(self.request.messages)
        # The step is stored whether or not the next is admitted: from here its figures are in
        # the ledger, not in this run.
        self._totals.append(usage)
        self.usage = None
        self.finish = None
        self.stream = None
        self.step += 1
        self.step_started_at = time.monotonic()
        self._step_text, self._step_reasoning = self.length, self.reasoning_length
        self._step_fragments = len(self.tool_fragments)
        self._step_stored = True
        try:
            await db.run(next_step, self.plan, usage, calls, prompt_tokens)
        except DatabaseError as error:
            logger.warning("streamchat: a step of reply %s failed (%s)", self.record.label, error)
            raise ChatError("unavailable", "The database is unavailable; try again.") from None
        self._step_stored = False

    def _opened(self, stream: ChatStream) -> None:
        # Known from HTTP 200 on, not only from the first delta: a reply stopped before it
        # still records its key and generation (and asks /generation for the cost).
        self.stream = stream

    def _append(self, text: str) -> None:
        if not text:
            return
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        offset = self.length
        self.text.append(text)
        self.length = offset + len(text)
        for follower in self.followers:
            follower.push("delta", offset, text)

    def _append_reasoning(self, text: str) -> None:
        if not text:
            return
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        offset = self.reasoning_length
        self.reasoning.append(text)
        self.reasoning_length = offset + len(text)
        for follower in self.followers:
            follower.push("reasoning", offset, text)

    def _tool_call(self, fragment: ToolCallDelta) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.tool_fragments.append(fragment)
        for take in self._tool_followers.values():
            take(fragment)

    async def _tick(self) -> None:
        """A checkpoint every CHECKPOINT_MS: the text added since the last one, the row's lease
        and (a few times per LEASE_SECONDS) the limit reservation's lease, in one trip. While a
        follower on another worker watches, a batch of new text every GROUP_BATCH_MS."""
        batch = app_settings.GROUP_BATCH_MS / 1000
        every = app_settings.CHECKPOINT_MS / 1000
        # Renewed a few times per LEASE_SECONDS, so a dead worker's stream slot frees within
        # LEASE_SECONDS, not TOTAL_TIMEOUT.
        renew_every = app_settings.LEASE_SECONDS / 3
        published = 0
        now = time.monotonic()
        next_checkpoint = now + every
        next_renewal = now + renew_every
        while True:
            now = time.monotonic()
            if self.watched:
                await asyncio.sleep(max(0.0, min(next_checkpoint, now + batch) - now))
            else:  # until the checkpoint, or until another worker starts watching
                try:
                    await asyncio.wait_for(
                        self._watch_asked.wait(), max(0.0, next_checkpoint - now)
                    )
                except TimeoutError:
                    pass
            if self.watched and self.length > published:
                try:
                    published = await self._publish_batch()
                except Exception as error:  # the checkpoint below does not depend on it
                    layer.trouble("publishing a reply to other workers", error)
            try:
                now = time.monotonic()
                if now >= next_checkpoint:
                    next_checkpoint = now + every
                    renew = now >= next_renewal
                    if renew:
                        next_renewal = now + renew_every
                    await self._checkpoint(renew)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed checkpoint is retried at the next tick; the reply goes on.
                logger.exception("streamchat: checkpoint of reply %s failed", self.record.label)

    async def _publish_batch(self) -> int:
        """The text since the last checkpoint, to followers on other workers; its end."""
        from channels.layers import get_channel_layer

        base = self.saved_length
        length = self.length
        await get_channel_layer().group_send(
            reply_group(self.reply_id),  # type: ignore[arg-type]
            {
                "type": "streamchat.delta",
                "reply": self.reply_id,
                "base": base,
                "text": self.text_from(base)[: length - base],
            },
        )
        return length

    async def _checkpoint(self, renew: bool) -> None:
        length, reasoning_length = self.length, self.reasoning_length
        if length == self.saved_length and reasoning_length == self.saved_reasoning and not renew:
            return
        text = "".join(self.text)
        reasoning = "".join(self.reasoning) if reasoning_length > self.saved_reasoning else ""
        await db.run(
            self.record.checkpoint,
            text[self.saved_length : length],
            reasoning[self.saved_reasoning : reasoning_length],
            self.plan.reservation if renew else None,
        )
        self.saved_length, self.saved_reasoning = length, reasoning_length

    async def _finalize(self) -> None:
        content = "".join(self.text)
        if self.interrupted:
            status, finish_reason = Message.Status.INTERRUPTED, "interrupted"
            self.error = ChatError(
                "interrupted", "The server restarted during this reply, so it was cut off."
            )
        elif self.stopping:
            status, finish_reason = Message.Status.STOPPED, "stopped"
        elif self.error is not None:
            status, finish_reason = Message.Status.ERROR, "error"
        elif self.finish is not None:
            status, finish_reason = Message.Status.COMPLETE, self.finish.reason
        else:
            status, finish_reason = Message.Status.ERROR, "error"
            self.error = OpenRouterError("incomplete", "The reply ended before it was finished.")
        self.status = status
        model_used = (self.finish.model if self.finish else "") or self.model.model_id
        usage_fields = self._usage_fields(status, model_used, self.text_from(self._step_text))
        reply_error = error_from(self.error)
        # A step whose successor was refused is in the ledger already: no second row for it.
        last_stored = self._step_stored and self.stream is None
        totals = _sum_usage([*self._totals, *([] if last_stored else [usage_fields])])
        stored = await self._store_end(
            user_id=self.user_id,
            content=content,
            reasoning="".join(self.reasoning),
            status=status,
            finish_reason=finish_reason,
            model_used=model_used,
            error_code=reply_error.code if reply_error else "",
            error_message=reply_error.message if reply_error else "",
            usage=None if last_stored else usage_fields,
            reservation=self.plan.reservation,
            key_used=self.stream.key if self.stream else None,
            tool_calls=self._round_rows,
        )
        self._round_rows = []
        reply, usage_row = stored if stored is not None else (None, None)
        self._log_end(status, finish_reason, usage_fields)
        self.result = event = Finished(
            reply_id=self.reply_id,
            conversation_id=self.record.conversation_id,
            status=status,
            finish_reason=finish_reason,
            model=model_used,
            length=self.length,
            usage=UsageFigures(
                prompt_tokens=totals["prompt_tokens"],
                completion_tokens=totals["completion_tokens"],
                reasoning_tokens=totals["reasoning_tokens"],
                cost=totals["cost"] if totals["cost_source"] != Usage.CostSource.UNKNOWN else None,
                estimated=self.usage is None,
            ),
            ttft_ms=usage_fields["time_to_first_token_ms"],
            error=reply_error,
        )
        for follower in list(self.followers):
            try:
                await follower.finished(event)
            except Exception:
                logger.debug("streamchat: a follower of reply %s went away", self.record.label)
        if self.reply_id is not None:
            self.hub.spawn(self._announce_end(event))
        if reply is not None and signals.reply_finished.has_listeners(Message):
            await signals.reply_finished.asend(sender=Message, message=reply, usage=usage_row)
        if usage_row is not None and signals.usage_recorded.has_listeners(Usage):
            await signals.usage_recorded.asend(sender=Usage, usage=usage_row)
        if (
            usage_row is not None
            and self.usage is None
            and self.stream
            and self.stream.generation_id
        ):
            self.hub.spawn(self._fetch_reported_cost(usage_row.pk, self.stream))

    async def _store_end(self, **fields: Any) -> tuple[Any, Any] | None:
        """The final write, retried while the database is away (this worker holds the only
        copy of the text its followers were sent) for up to ``2 × LEASE_SECONDS``: a reaper
        that took the reply for dead meanwhile is overwritten with the whole text. Followers
        are told the end only after it is stored (or given up on)."""
        deadline = time.monotonic() + 2 * float(app_settings.LEASE_SECONDS)
        delay = 0.1
        finish: Callable[..., tuple[Any, Any]] = self.record.finish
        while True:
            try:
                return await db.run(finish, **fields)
            except DatabaseError as error:
                if time.monotonic() + delay > deadline:
                    logger.error(
                        "streamchat: could not store the end of reply %s; gave up (%s)",
                        self.record.label,
                        error,
                    )
                    return None
                logger.warning(
                    "streamchat: storing the end of reply %s failed, retrying (%s)",
                    self.record.label,
                    error,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:
                # The lease lapses and the reaper marks it interrupted with its last checkpoint.
                logger.exception(
                    "streamchat: could not store the end of reply %s", self.record.label
                )
                return None

    async def _announce_end(self, event: Finished) -> None:
        """Followers on other workers and other tabs learn the end through the channel layer."""
        from channels.layers import get_channel_layer

        channel_layer = get_channel_layer()
        message = {**frames.finished(event), "type": "streamchat.finished"}
        try:
            if self.watched:
                await channel_layer.group_send(reply_group(self.reply_id), message)  # type: ignore[arg-type]
            if event.conversation_id is not None:
                await channel_layer.group_send(conversation_group(event.conversation_id), message)
        except Exception as error:
            layer.trouble("publishing the end of a reply", error)

    def _log_end(self, status: str, finish_reason: str, usage_fields: dict[str, Any]) -> None:
        """One line per reply, with ids and figures: never its text, the question or a key."""
        if status == Message.Status.ERROR:
            reply_error = error_from(self.error)
            logger.warning(
                "streamchat: reply %s of user %s failed: %s (upstream status %s) after %d chars",
                self.record.label,
                self.user_id,
                reply_error.code if reply_error else "",
                getattr(self.error, "status", None),
                self.length,
            )
        else:
            logger.info(
                "streamchat: reply %s of user %s %s (%s): %d chars, %s tokens, %s ms",
                self.record.label,
                self.user_id,
                status,
                finish_reason,
                self.length,
                usage_fields["completion_tokens"],
                usage_fields["duration_ms"],
            )

    def _usage_fields(self, status: str, model_used: str, content: str) -> dict[str, Any]:
        report = self.usage
        ttft = (
            round((self.first_token_at - self.started_at) * 1000)
            if self.first_token_at is not None
            else None
        )
        reply_error = error_from(self.error)
        fields: dict[str, Any] = {
            "source": self.plan.source,
            "api_key_id": self.stream.key.id if self.stream else None,
            "model_requested": self.model.model_id,
            "model_used": model_used,
            "time_to_first_token_ms": ttft,
            "duration_ms": round((time.monotonic() - self.step_started_at) * 1000),
            "generation_id": (self.finish.generation_id if self.finish else "")
            or (self.stream.generation_id if self.stream else ""),
            "outcome": status,
            "error_code": reply_error.code if reply_error else "",
        }
        if report is not None:
            cost = report.cost
            source = Usage.CostSource.REPORTED
            if cost is None:
                cost = self.model.cost_for(report.prompt_tokens, report.completion_tokens)
                source = Usage.CostSource.COMPUTED if cost is not None else Usage.CostSource.UNKNOWN
            fields.update(
                prompt_tokens=report.prompt_tokens,
                completion_tokens=report.completion_tokens,
                reasoning_tokens=report.reasoning_tokens,
                cost=cost if cost is not None else Decimal(0),
                cost_source=source,
                details=report.details,
            )
        else:
            # No usage chunk (stopped, failed): estimate, and ask /generation later.
            prompt = self.plan.prompt_tokens if self.stream else 0  # attachments included
            completion = store.estimate_tokens(content) + store.estimate_tokens(
                "".join(self.reasoning)[self._step_reasoning :]
            )
            cost = (
                self.model.cost_for(prompt, completion) if self.stream is not None else Decimal(0)
            )
            fields.update(
                prompt_tokens=prompt,
                completion_tokens=completion,
                reasoning_tokens=0,
                cost=cost if cost is not None else Decimal(0),
                cost_source=Usage.CostSource.ESTIMATED
                if cost is not None
                else Usage.CostSource.UNKNOWN,
            )
        return fields

    async def _fetch_reported_cost(self, usage_id: int, stream: ChatStream) -> None:
        """A stopped reply gets no usage chunk: OpenRouter's /generation knows, a little later."""
        from ..openrouter.account import aget_generation

        try:
            data = await aget_generation(stream.generation_id, stream.key.secret)
        except Exception as error:
            logger.info("streamchat: no reported cost for reply %s (%s)", self.record.label, error)
            return
        figures: dict[str, Any] = {}
        if data.get("total_cost") is not None:
            figures["cost"] = Decimal(str(data["total_cost"]))
            figures["cost_source"] = Usage.CostSource.REPORTED
        for ours, theirs in (
            ("prompt_tokens", "native_tokens_prompt"),
            ("completion_tokens", "native_tokens_completion"),
        ):
            if isinstance(data.get(theirs), int):
                figures[ours] = data[theirs]
        if not figures:
            return
        updated = await db.run(store.update_usage_cost, usage_id, figures)
        if updated is not None and self.reply_id is not None:
            # Pages showed the estimate: they replace it with the ledger's new figure.
            await self._publish_usage(updated)

    async def _publish_usage(self, figures: UsageFigures) -> None:
        from channels.layers import get_channel_layer

        assert self.record.conversation_id is not None
        try:
            await get_channel_layer().group_send(
                conversation_group(self.record.conversation_id),
                {
                    "type": "streamchat.usage",
                    "reply": self.reply_id,
                    "conversation": self.record.conversation_id,
                    "usage": frames.usage(figures),
                },
            )
        except Exception as error:  # the page shows the ledger's figure on its next load
            layer.trouble("publishing a reply's reported cost", error)


def _sum_usage(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """A reply's figures over its steps (one step: its own fields, as they are)."""
    if len(steps) == 1:
        return steps[0]
    known = [s for s in steps if s["cost_source"] != Usage.CostSource.UNKNOWN]
    return {
        "prompt_tokens": sum(s["prompt_tokens"] for s in steps),
        "completion_tokens": sum(s["completion_tokens"] for s in steps),
        "reasoning_tokens": sum(s["reasoning_tokens"] for s in steps),
        "cost": sum((s["cost"] for s in known), Decimal(0)),
        "cost_source": Usage.CostSource.REPORTED if known else Usage.CostSource.UNKNOWN,
    }


async def _record_key_failure(key: key_store.KeyChoice, error: OpenRouterError) -> None:
    await db.run(key_store.record_key_failure, key, error.message)


class Reply:
    """A handle on one reply, for front ends: follow it, stop it, wait for its end.

    ``reply_id`` and ``conversation_id`` are None for an API exchange that is not stored.
    """

    __slots__ = ("_run",)

    def __init__(self, run: ReplyRun) -> None:
        self._run = run

    @property
    def reply_id(self) -> int | None:
        return self._run.reply_id

    @property
    def conversation_id(self) -> int | None:
        return self._run.record.conversation_id

    @property
    def user_id(self) -> Any:
        return self._run.user_id

    @property
    def model(self) -> str:
        return self._run.model.model_id

    @property
    def done(self) -> asyncio.Event:
        return self._run.done

    @property
    def status(self) -> str:
        return self._run.status

    @property
    def length(self) -> int:
        return self._run.length

    @property
    def result(self) -> Finished | None:
        """The ``Finished`` event once the reply ended."""
        return self._run.result

    @property
    def error(self) -> StreamchatError | None:
        """Why it failed (an ``OpenRouterError`` for an upstream failure), once it ended."""
        return self._run.error

    @property
    def upstream_finish(self) -> Finish | None:
        """OpenRouter's end of the stream (finish reason, model, generation id, provider)."""
        return self._run.finish

    @property
    def upstream_usage(self) -> UsageReport | None:
        """The usage OpenRouter reported in the stream; None when it sent none."""
        return self._run.usage

    @property
    def text(self) -> str:
        return "".join(self._run.text)

    @property
    def reasoning(self) -> str:
        return "".join(self._run.reasoning)

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls the model made, each whole (none for most replies)."""
        return assemble_tool_calls(self._run.tool_fragments)

    def text_from(self, offset: int) -> str:
        return self._run.text_from(offset)

    def follow(self, follower: Follower, offset: int = 0) -> None:
        self._run.follow(follower, offset)

    def unfollow(self, follower: Follower) -> None:
        self._run.unfollow(follower)

    def stop(self) -> None:
        self._run.stop()

    async def wait(self) -> Finished:
        await self._run.done.wait()
        assert self._run.result is not None
        return self._run.result
