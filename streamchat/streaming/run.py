"""One running reply: upstream deltas in, followers and checkpoints out, one final write.

The hot path (``_consume``) appends each delta to an in-memory list and hands it to the local
followers; nothing per delta touches the database, the channel layer or the log. A ticker saves
the text every ``CHECKPOINT_MS`` (renewing the reply's lease) and, once another worker watches,
publishes new text every ``GROUP_BATCH_MS``.

A run of the OpenAI-compatible API that is not stored as a conversation has no Message row
(``reply_id`` and ``origin.conversation_id`` are None): it is not registered with the hub (nobody
can follow or stop it by id), keeps no checkpoints, and its end writes only its Usage row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from .. import keys as key_store
from .. import signals
from ..conf import app_settings
from ..models import Message, Usage
from ..openrouter.client import ChatRequest, ChatStream, open_stream
from ..openrouter.errors import OpenRouterError
from ..openrouter.events import ContentDelta, Finish, ReasoningDelta, UsageReport
from . import store
from .hub import Follower, Hub, conversation_group, reply_group
from .store import ModelChoice

logger = logging.getLogger("streamchat.streaming")


@dataclass(slots=True)
class Origin:
    """Who asked for a reply, and through which entry point (``Usage.source``)."""

    user_id: int
    conversation_id: int | None  # None: an API exchange that is not stored
    source: str = Usage.Source.WEBSOCKET
    client_id: str = ""


class ReplyRun:
    def __init__(
        self,
        *,
        hub: Hub,
        reply_id: int | None,
        parent_id: int | None,
        origin: Origin,
        model: ModelChoice,
        request: ChatRequest,
        reservation: Any = None,
    ) -> None:
        self.hub = hub
        self.reply_id = reply_id
        self.parent_id = parent_id
        self.origin = origin
        self.model = model
        self.request = request
        self.reservation = reservation
        self.followers: set[Follower] = set()
        self.watched = False  # a follower on another worker asked for batches
        self.text: list[str] = []
        self.length = 0  # code points of reply text so far
        self.reasoning: list[str] = []
        self.reasoning_length = 0
        self.saved_length = 0  # text confirmed in the database (the base of published batches)
        self.status = Message.Status.STREAMING
        self.finish: Finish | None = None
        self.usage: UsageReport | None = None
        self.error: OpenRouterError | None = None
        self.stream: ChatStream | None = None
        self.stopping = False
        self.started_at = time.monotonic()
        self.first_token_at: float | None = None
        self.finished_frame: dict[str, Any] | None = None
        self.done = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None

    # -- followers -----------------------------------------------------------------------------

    def follow(self, follower: Follower, offset: int = 0) -> None:
        """Send the text from ``offset`` at once, then every later delta (no gap, no repeat)."""
        if offset < self.length:
            follower.push("delta", offset, self.text_from(offset))
        if self.reasoning_length:
            follower.push("reasoning", 0, "".join(self.reasoning))
        self.followers.add(follower)

    def unfollow(self, follower: Follower) -> None:
        self.followers.discard(follower)

    def text_from(self, offset: int) -> str:
        return "".join(self.text)[offset:]

    # -- control -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.reply_id is not None:
            # In the registry at once: a stop that arrives before the task first runs finds it.
            self.hub.runs[self.reply_id] = self
        self.hub.spawn(self._run())

    def stop(self) -> None:
        """Close upstream at once; the partial text is kept with status ``stopped``."""
        if self.stopping or self.done.is_set():
            return
        self.stopping = True
        if self._consumer is not None:
            self._consumer.cancel()

    # -- the reply -----------------------------------------------------------------------------

    async def _run(self) -> None:
        if self.reply_id is not None:
            await self.hub.register(self)
        else:
            await self.hub.ensure_started()
        ticker = self.hub.spawn(self._tick())
        try:
            self._consumer = asyncio.get_running_loop().create_task(self._consume())
            if self.stopping:
                # Stopped before it began (``stop`` finds no consumer to cancel until here): it
                # never calls upstream, instead of streaming a whole reply nobody wants.
                self._consumer.cancel()
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
                if self.reply_id is not None:
                    await self.hub.unregister(self)
                self.done.set()

    async def _consume(self) -> None:
        try:
            keys = await key_store.ausable_keys()
            self.stream = stream = await open_stream(
                self.request, keys, on_key_failure=_record_key_failure
            )
            self.hub.spawn(key_store.arecord_key_used(stream.key))  # off the first token's path
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
                            self.finish = Finish(
                                "length", stream.model_requested, stream.generation_id
                            )
                            break
                    elif kind is ReasoningDelta:
                        text = event.text  # type: ignore[union-attr]
                        room = limit - self.reasoning_length
                        self._append_reasoning(text if len(text) < room else text[:room])
                        if len(text) >= room:
                            self.finish = Finish(
                                "length", stream.model_requested, stream.generation_id
                            )
                            break
                    elif kind is UsageReport:
                        self.usage = event  # type: ignore[assignment]
                    elif kind is Finish:
                        self.finish = event  # type: ignore[assignment]
            finally:
                await stream.aclose()
        except OpenRouterError as error:
            self.error = error
        except asyncio.CancelledError:
            if not self.stopping:
                self.error = OpenRouterError(
                    "total_timeout", "The reply took too long and was cut off."
                )
        except Exception as error:  # never leave a reply streaming forever
            logger.exception("streamchat: reply %s failed", self.reply_id)
            self.error = OpenRouterError(
                "internal_error", f"The reply failed ({type(error).__name__})."
            )

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

    async def _tick(self) -> None:
        """Checkpoints (and lease renewal) every CHECKPOINT_MS; batches for watchers on other
        workers every GROUP_BATCH_MS."""
        layer = get_channel_layer()
        batch = app_settings.GROUP_BATCH_MS / 1000
        every = max(1, round(app_settings.CHECKPOINT_MS / app_settings.GROUP_BATCH_MS))
        # The limit reservation's lease is renewed a few times per LEASE_SECONDS, so a dead
        # worker's stream slot frees within LEASE_SECONDS, not TOTAL_TIMEOUT.
        renew_every = max(
            1, round(app_settings.LEASE_SECONDS * 1000 / 3 / app_settings.GROUP_BATCH_MS)
        )
        published = 0
        ticks = 0
        while True:
            await asyncio.sleep(batch)
            ticks += 1
            try:
                if self.watched and self.length > published:
                    published = self.length
                    base = self.saved_length
                    await layer.group_send(
                        reply_group(self.reply_id),
                        {
                            "type": "streamchat.delta",
                            "reply": self.reply_id,
                            "base": base,
                            "text": self.text_from(base),
                        },
                    )
                if self.reply_id is not None and ticks % every == 0:
                    length = self.length
                    await database_sync_to_async(store.checkpoint)(
                        self.reply_id, "".join(self.text), "".join(self.reasoning)
                    )
                    self.saved_length = length
                if self.reservation is not None and ticks % renew_every == 0:
                    from .. import limits

                    await limits.arenew(self.reservation)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed checkpoint is retried at the next tick; the reply goes on.
                logger.exception("streamchat: checkpoint of reply %s failed", self.reply_id)

    async def _finalize(self) -> None:
        content = "".join(self.text)
        if self.stopping:
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
        usage_fields = self._usage_fields(status, model_used, content)
        error_code = _error_code(self.error)
        error_message = self.error.message if self.error else ""
        reply: Message | None
        usage_row: Usage | None
        try:
            if self.reply_id is None:
                reply = None
                usage_row = await database_sync_to_async(store.record_usage)(
                    user_id=self.origin.user_id, usage=usage_fields
                )
            else:
                reply, usage_row = await database_sync_to_async(store.finish_reply)(
                    reply_id=self.reply_id,
                    user_id=self.origin.user_id,
                    content=content,
                    reasoning="".join(self.reasoning),
                    status=status,
                    finish_reason=finish_reason,
                    model_used=model_used,
                    error_code=error_code,
                    error_message=error_message,
                    usage=usage_fields,
                )
        except Exception:
            # The lease lapses and the reaper marks the reply interrupted with its last checkpoint.
            logger.exception("streamchat: could not store the end of reply %s", self.reply_id)
            reply, usage_row = None, None
        await self._settle_limits(usage_fields)
        self._log_end(status, finish_reason, usage_fields)
        usage = {
            "prompt_tokens": usage_fields["prompt_tokens"],
            "completion_tokens": usage_fields["completion_tokens"],
            "reasoning_tokens": usage_fields["reasoning_tokens"],
            "cost": str(usage_fields["cost"]) if usage_fields["cost_source"] != "unknown" else None,
        }
        frame = {
            "type": "reply.finished",
            "reply": self.reply_id,
            "conversation": self.origin.conversation_id,
            "status": status,
            "finish_reason": finish_reason,
            "model": model_used,
            "length": self.length,
            "usage": usage,
            "ttft_ms": usage_fields["time_to_first_token_ms"],
            "error": _error_frame(self.error),
        }
        self.finished_frame = frame
        for follower in list(self.followers):
            try:
                await follower.finished(frame)
            except Exception:
                logger.debug("streamchat: a follower of reply %s went away", self.reply_id)
        layer = get_channel_layer()
        try:
            if self.watched and self.reply_id is not None:
                await layer.group_send(
                    reply_group(self.reply_id), {**frame, "type": "streamchat.finished"}
                )
            if self.origin.conversation_id is not None:
                await layer.group_send(
                    conversation_group(self.origin.conversation_id),
                    {**frame, "type": "streamchat.finished"},
                )
        except Exception:
            logger.exception("streamchat: could not publish the end of reply %s", self.reply_id)
        if reply is not None:
            await signals.reply_finished.asend(sender=Message, message=reply, usage=usage_row)
        if usage_row is not None:
            await signals.usage_recorded.asend(sender=Usage, usage=usage_row)
        if (
            usage_row is not None
            and self.usage is None
            and self.stream
            and self.stream.generation_id
        ):
            self.hub.spawn(self._fetch_reported_cost(usage_row.pk, self.stream))

    @property
    def label(self) -> str:
        """How log lines name this reply: its id, or its source when it has no row (API)."""
        if self.reply_id is None:
            return f"({self.origin.source}, not stored)"
        return str(self.reply_id)

    def _log_end(self, status: str, finish_reason: str, usage_fields: dict[str, Any]) -> None:
        """One line per reply, with ids and figures: never its text, the question or a key."""
        if status == Message.Status.ERROR:
            logger.warning(
                "streamchat: reply %s of user %s failed: %s (upstream status %s) after %d chars",
                self.label,
                self.origin.user_id,
                _error_code(self.error),
                self.error.status if self.error else None,
                self.length,
            )
        else:
            logger.info(
                "streamchat: reply %s of user %s %s (%s): %d chars, %s tokens, %s ms",
                self.label,
                self.origin.user_id,
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
        fields: dict[str, Any] = {
            "source": self.origin.source,
            "api_key_id": self.stream.key.id if self.stream else None,
            "model_requested": self.model.model_id,
            "model_used": model_used,
            "time_to_first_token_ms": ttft,
            "duration_ms": round((time.monotonic() - self.started_at) * 1000),
            "generation_id": (self.finish.generation_id if self.finish else "")
            or (self.stream.generation_id if self.stream else ""),
            "outcome": status,
            "error_code": _error_code(self.error),
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
            prompt = self.prompt_estimate if self.stream is not None else 0
            completion = store.estimate_tokens(content) + store.estimate_tokens(
                "".join(self.reasoning)
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

    @property
    def prompt_estimate(self) -> int:
        from .context import estimate_prompt_tokens

        return estimate_prompt_tokens(self.request.messages)

    async def _settle_limits(self, usage_fields: dict[str, Any]) -> None:
        if self.reservation is None:
            return
        from .. import limits

        try:
            await limits.asettle(
                self.reservation,
                prompt_tokens=usage_fields["prompt_tokens"],
                completion_tokens=usage_fields["completion_tokens"],
                cost=usage_fields["cost"],
            )
        except Exception:
            logger.exception("streamchat: settling the limits of reply %s failed", self.reply_id)

    async def _fetch_reported_cost(self, usage_id: int, stream: ChatStream) -> None:
        """A stopped reply gets no usage chunk: OpenRouter's /generation knows, a little later."""
        from ..openrouter.account import aget_generation

        try:
            data = await aget_generation(stream.generation_id, stream.key.secret)
        except Exception as error:
            logger.info("streamchat: no reported cost for reply %s (%s)", self.reply_id, error)
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
        if figures:
            await database_sync_to_async(store.update_usage_cost)(usage_id, figures)


async def _record_key_failure(key: key_store.KeyChoice, error: OpenRouterError) -> None:
    await key_store.arecord_key_failure(key, error.message)


# OpenRouter's own 429 is kept apart from our limits' ``rate_limited`` in what users and admins see.
_UPSTREAM_CODES = {"rate_limited": "upstream_rate_limited"}


def _error_code(error: OpenRouterError | None) -> str:
    if error is None:
        return ""
    return _UPSTREAM_CODES.get(error.code, error.code)


def _error_frame(error: OpenRouterError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    frame: dict[str, Any] = {"code": _error_code(error), "message": error.message}
    if error.retry_after is not None:
        frame["retry_after"] = round(error.retry_after, 1)
    return frame
