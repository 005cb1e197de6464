"""streamchat's data: the chat log (Conversation, Message), the usage ledger (Usage) and what admins
configure (ApiKey, ChatModel, RateLimit), plus users' tokens for the OpenAI-compatible API
(PersonalToken).

The chat log and the ledger are deliberately separate: deleting a conversation keeps its Usage rows,
so nobody resets a budget by deleting chats.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .pricing import usd


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="streamchat_conversations",
        verbose_name=_("owner"),
    )
    title = models.CharField(_("title"), max_length=200, blank=True)
    model = models.CharField(
        _("model"),
        max_length=200,
        blank=True,
        help_text=_("OpenRouter model id, e.g. openai/gpt-4o."),
    )
    # Client id of the send that created the conversation: a retried first send finds it again.
    client_id = models.CharField(_("client id"), max_length=64, blank=True, editable=False)
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    updated = models.DateTimeField(_("updated"), default=timezone.now, db_index=False)

    class Meta:
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        ordering = ["-updated", "-id"]
        indexes = [models.Index(fields=["owner", "-updated"], name="streamchat_conv_recent")]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "client_id"],
                condition=~Q(client_id=""),
                name="streamchat_conv_client_id_unique",
            )
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system", _("system")
        USER = "user", _("user")
        ASSISTANT = "assistant", _("assistant")

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        STREAMING = "streaming", _("streaming")
        COMPLETE = "complete", _("complete")
        STOPPED = "stopped", _("stopped")
        ERROR = "error", _("error")
        INTERRUPTED = "interrupted", _("interrupted")

    FINAL_STATUSES = (Status.COMPLETE, Status.STOPPED, Status.ERROR, Status.INTERRUPTED)

    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.CASCADE,
        related_name="messages",
        verbose_name=_("conversation"),
    )
    # Replies, regenerations and edits form a tree: siblings share a parent.
    parent = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="children",
        verbose_name=_("parent"),
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    content = models.TextField(_("content"), blank=True)
    reasoning = models.TextField(_("reasoning"), blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.COMPLETE
    )
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    model = models.CharField(_("model used"), max_length=200, blank=True)
    finish_reason = models.CharField(_("finish reason"), max_length=32, blank=True)
    # Idempotency: the same client message id in one conversation yields one message.
    client_message_id = models.CharField(
        _("client message id"), max_length=64, blank=True, editable=False
    )
    # While streaming: the worker renews the lease at each checkpoint; a lapsed lease means the
    # worker died and the reaper marks the reply interrupted.
    lease_expires = models.DateTimeField(_("lease expires"), null=True, blank=True, editable=False)
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    completed = models.DateTimeField(_("completed"), null=True, blank=True)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["created", "id"]
        indexes = [
            models.Index(fields=["conversation", "created"], name="streamchat_msg_conv_created"),
            models.Index(
                fields=["lease_expires"],
                condition=Q(status="streaming"),
                name="streamchat_msg_streaming",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_message_id"],
                condition=~Q(client_message_id=""),
                name="streamchat_msg_client_id_unique",
            )
        ]

    def __str__(self) -> str:
        text = " ".join(self.content.split())
        return f"{self.get_role_display()}: {text[:60]}{'…' if len(text) > 60 else ''}"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class Attachment(models.Model):
    """An image or PDF a user uploaded, sent upstream with the user message it belongs to.

    The file is in Django's storage (``ATTACHMENT_STORAGE``) under a generated name; it is
    checked by its content before it is stored (``streamchat.attachments``). ``message`` is null
    until the message is sent. An edit that keeps a message's attachments gets rows of its own
    sharing the same file; the file is deleted with the last row naming it (with the
    conversation, or the user).
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="streamchat_attachments",
        verbose_name=_("owner"),
    )
    message = models.ForeignKey(
        Message,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="attachments",
        verbose_name=_("message"),
        help_text=_("Empty until the message is sent."),
    )
    storage_name = models.CharField(_("storage name"), max_length=200, editable=False)
    filename = models.CharField(_("file name"), max_length=200, blank=True)
    content_type = models.CharField(_("content type"), max_length=50)
    size = models.PositiveIntegerField(_("size (bytes)"))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    width = models.PositiveIntegerField(_("width"), null=True, blank=True)
    height = models.PositiveIntegerField(_("height"), null=True, blank=True)
    pages = models.PositiveIntegerField(_("pages"), null=True, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")
        ordering = ["created", "id"]
        indexes = [
            models.Index(fields=["owner", "message"], name="streamchat_attach_owner"),
            models.Index(fields=["storage_name"], name="streamchat_attach_file"),
        ]

    def __str__(self) -> str:
        return self.filename or f"Attachment {self.pk}"

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


class ApiKey(models.Model):
    label = models.CharField(_("label"), max_length=100)
    # Fernet ciphertext (see streamchat.crypto); the plain secret is never stored.
    secret_encrypted = models.TextField(_("encrypted secret"), editable=False)
    hint = models.CharField(
        _("hint"), max_length=40, editable=False, help_text=_("Shows the key's start and end only.")
    )
    is_active = models.BooleanField(_("active"), default=True)
    priority = models.PositiveSmallIntegerField(
        _("priority"),
        default=100,
        help_text=_("Lower is tried first; the next key takes over on failure."),
    )
    last_used = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    last_verified = models.DateTimeField(_("last verified"), null=True, blank=True, editable=False)
    last_error = models.TextField(_("last error"), blank=True, editable=False)
    last_error_at = models.DateTimeField(_("last error at"), null=True, blank=True, editable=False)
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    # What OpenRouter's /key said at the last verify: label, limit, usage, limit_remaining (USD).
    account = models.JSONField(
        _("account at last verify"), default=dict, blank=True, editable=False
    )

    class Meta:
        verbose_name = _("OpenRouter API key")
        verbose_name_plural = _("OpenRouter API keys")
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return f"{self.label} ({self.hint})" if self.hint else self.label

    @property
    def is_failing(self) -> bool:
        return bool(self.last_error) and (
            self.last_verified is None
            or self.last_error_at is None
            or self.last_error_at >= self.last_verified
        )


class ChatModel(models.Model):
    model_id = models.CharField(
        _("OpenRouter model id"),
        max_length=200,
        unique=True,
        help_text=_(
            "With its provider prefix, e.g. openai/gpt-4o. The simulator's scenario models take "
            "parameters after “?”, e.g. simulator/stall?after=10."
        ),
    )
    display_name = models.CharField(_("display name"), max_length=200, blank=True)
    enabled = models.BooleanField(_("enabled"), default=False)
    is_default = models.BooleanField(
        _("default"),
        default=False,
        help_text=_("Used when a user does not pick a model. Exactly one."),
    )
    default_temperature = models.DecimalField(
        _("default temperature"), max_digits=3, decimal_places=2, null=True, blank=True
    )
    max_tokens = models.PositiveIntegerField(
        _("max tokens"), null=True, blank=True, help_text=_("Largest reply, in tokens.")
    )
    system_prompt = models.TextField(_("system prompt"), blank=True)
    fallback_models = models.JSONField(
        _("fallback models"),
        default=list,
        blank=True,
        help_text=_("Model ids OpenRouter tries in order when this one fails."),
    )
    prompt_price = models.DecimalField(
        _("prompt price"),
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text=_("USD per million prompt tokens."),
    )
    completion_price = models.DecimalField(
        _("completion price"),
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text=_("USD per million completion tokens."),
    )
    context_length = models.PositiveIntegerField(_("context length"), null=True, blank=True)
    max_completion_tokens = models.PositiveIntegerField(
        _("max completion tokens"),
        null=True,
        blank=True,
        help_text=_(
            "The longest reply the model's provider allows (OpenRouter's "
            "top_provider.max_completion_tokens). Budgets reserve at most this much for a reply."
        ),
    )
    input_modalities = models.JSONField(
        _("input modalities"),
        default=list,
        blank=True,
        help_text=_(
            'What the model reads (OpenRouter\'s architecture.input_modalities, e.g. ["text", '
            '"image", "file"]). Attachments go only to models that list their kind.'
        ),
    )
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    updated = models.DateTimeField(_("updated"), auto_now=True)
    # Set by "Sync from OpenRouter" when /models lists this model; stale means OpenRouter
    # dropped it.
    last_synced = models.DateTimeField(_("last synced"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("chat model")
        verbose_name_plural = _("chat models")
        ordering = ["-is_default", "display_name", "model_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=Q(is_default=True),
                name="streamchat_one_default_model",
            )
        ]

    def __str__(self) -> str:
        return self.display_name or self.model_id

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # Choosing a new default demotes the old one in the same transaction, so there is
        # never more than one (the constraint) and choosing one never fails.
        with transaction.atomic():
            if self.is_default:
                ChatModel.objects.filter(is_default=True).exclude(pk=self.pk).update(
                    is_default=False
                )
            super().save(*args, **kwargs)

    def cost_for(self, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
        """Cost in USD from this model's price table, or None when prices are unknown."""
        from .pricing import cost

        return cost(prompt_tokens, completion_tokens, self.prompt_price, self.completion_price)


class RateLimit(models.Model):
    class Scope(models.TextChoices):
        DEFAULT = "default", _("site default")
        GROUP = "group", _("group")
        USER = "user", _("user")

    scope = models.CharField(_("scope"), max_length=8, choices=Scope.choices)
    group = models.OneToOneField(
        Group,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="streamchat_limit",
        verbose_name=_("group"),
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="streamchat_limit",
        verbose_name=_("user"),
    )
    requests_per_minute = models.PositiveIntegerField(
        _("requests per minute"), null=True, blank=True
    )
    requests_per_day = models.PositiveIntegerField(_("requests per day"), null=True, blank=True)
    tokens_per_day = models.PositiveIntegerField(_("tokens per day"), null=True, blank=True)
    spend_per_month = models.DecimalField(
        _("spend per month (USD)"), max_digits=12, decimal_places=4, null=True, blank=True
    )
    concurrent_streams = models.PositiveSmallIntegerField(
        _("concurrent streams"), null=True, blank=True
    )

    LIMIT_FIELDS = (
        "requests_per_minute",
        "requests_per_day",
        "tokens_per_day",
        "spend_per_month",
        "concurrent_streams",
    )

    class Meta:
        verbose_name = _("rate limit")
        verbose_name_plural = _("rate limits")
        ordering = ["scope", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(scope="default", group__isnull=True, user__isnull=True)
                    | Q(scope="group", group__isnull=False, user__isnull=True)
                    | Q(scope="user", group__isnull=True, user__isnull=False)
                ),
                name="streamchat_limit_scope_matches_target",
            ),
            models.UniqueConstraint(
                fields=["scope"], condition=Q(scope="default"), name="streamchat_one_default_limit"
            ),
        ]

    def __str__(self) -> str:
        if self.scope == self.Scope.USER:
            return f"Limits for user {self.user}"
        if self.scope == self.Scope.GROUP:
            return f"Limits for group {self.group}"
        return "Site default limits"


class Usage(models.Model):
    """One row per upstream request, written once when it ends (simonw/llm's ledger shape)."""

    class CostSource(models.TextChoices):
        REPORTED = "reported", _("reported by OpenRouter")
        COMPUTED = "computed", _("computed from the price table")
        ESTIMATED = "estimated", _("estimated")
        UNKNOWN = "unknown", _("unknown")

    class Outcome(models.TextChoices):
        COMPLETE = "complete", _("complete")
        STOPPED = "stopped", _("stopped")
        ERROR = "error", _("error")
        INTERRUPTED = "interrupted", _("interrupted")
        REFUSED = "refused", _("refused by a limit")

    class Source(models.TextChoices):
        WEBSOCKET = "websocket", _("websocket")
        SSE = "sse", _("server-sent events")
        API = "api", _("OpenAI-compatible API")
        PYTHON = "python", _("Python API")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="streamchat_usage",
        verbose_name=_("user"),
    )
    # SET_NULL: the ledger outlives the chat log.
    message = models.ForeignKey(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage",
        verbose_name=_("message"),
    )
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage",
        verbose_name=_("API key"),
    )
    source = models.CharField(
        _("source"), max_length=16, choices=Source.choices, default=Source.WEBSOCKET
    )
    model_requested = models.CharField(_("model requested"), max_length=200, blank=True)
    model_used = models.CharField(_("model used"), max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(_("prompt tokens"), default=0)
    completion_tokens = models.PositiveIntegerField(_("completion tokens"), default=0)
    reasoning_tokens = models.PositiveIntegerField(_("reasoning tokens"), default=0)
    cost = models.DecimalField(
        _("cost (USD)"), max_digits=18, decimal_places=10, default=Decimal(0)
    )
    cost_source = models.CharField(
        _("cost source"), max_length=16, choices=CostSource.choices, default=CostSource.UNKNOWN
    )
    time_to_first_token_ms = models.PositiveIntegerField(
        _("time to first token (ms)"), null=True, blank=True
    )
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    generation_id = models.CharField(_("generation id"), max_length=100, blank=True)
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    error_code = models.CharField(_("error code"), max_length=64, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("usage record")
        verbose_name_plural = _("usage")
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["user", "created"], name="streamchat_usage_user_time"),
            models.Index(fields=["created"], name="streamchat_usage_time"),
        ]

    def __str__(self) -> str:
        model = self.model_used or self.model_requested
        return f"{model}: {self.total_tokens} tokens, {usd(self.cost)}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LimitLock(models.Model):
    """One row per user that sends: the lock that serialises that user's admissions.

    Every admission starts by writing this row, so concurrent admissions of one user (any worker,
    any process) run one after another: a row lock on PostgreSQL, the database write lock on SQLite.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="+",
        verbose_name=_("user"),
    )
    locked = models.DateTimeField(_("last locked"), default=timezone.now)

    class Meta:
        verbose_name = _("limit lock")
        verbose_name_plural = _("limit locks")

    def __str__(self) -> str:
        return f"Limit lock of user {self.user_id}"


class Reservation(models.Model):
    """What one admitted upstream request holds against its user's limits (see streamchat.limits).

    Open: the worst case (prompt estimate plus max tokens, at the model's price) counts against the
    budgets and the request holds a concurrent-stream slot until ``expires``. Settled: the real
    figures count instead. Released: the upstream call never happened; nothing counts.
    """

    class State(models.TextChoices):
        OPEN = "open", _("open")
        SETTLED = "settled", _("settled")
        RELEASED = "released", _("released")
        EXPIRED = "expired", _("expired")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="streamchat_reservations",
        verbose_name=_("user"),
    )
    state = models.CharField(_("state"), max_length=8, choices=State.choices, default=State.OPEN)
    source = models.CharField(_("source"), max_length=16, choices=Usage.Source.choices)
    model = models.CharField(_("model"), max_length=200, blank=True)
    # The stored reply it admitted, so the reaper that interrupts the reply settles it too.
    message = models.ForeignKey(
        "Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="reservations",
        verbose_name=_("reply"),
    )
    reserved_tokens = models.PositiveIntegerField(_("reserved tokens"))
    reserved_cost = models.DecimalField(
        _("reserved cost (USD)"),
        max_digits=18,
        decimal_places=10,
        null=True,
        blank=True,
        help_text=_("Empty when the model's prices are unknown: then only tokens are reserved."),
    )
    prompt_price = models.DecimalField(
        _("prompt price"), max_digits=12, decimal_places=6, null=True, blank=True
    )
    completion_price = models.DecimalField(
        _("completion price"), max_digits=12, decimal_places=6, null=True, blank=True
    )
    tokens = models.PositiveIntegerField(_("tokens used"), default=0)
    cost = models.DecimalField(
        _("cost (USD)"), max_digits=18, decimal_places=10, default=Decimal(0)
    )
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    # The lease: an open reservation whose worker died stops holding a stream slot at this time.
    expires = models.DateTimeField(_("expires"))
    settled = models.DateTimeField(_("settled"), null=True, blank=True)

    class Meta:
        verbose_name = _("limit reservation")
        verbose_name_plural = _("limit reservations")
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["user", "created"], name="streamchat_resv_user_time"),
            models.Index(
                fields=["expires"], condition=Q(state="open"), name="streamchat_resv_open"
            ),
        ]

    def __str__(self) -> str:
        return f"Reservation {self.pk} of user {self.user_id} ({self.state})"


class PersonalToken(models.Model):
    """A user's bearer token for the OpenAI-compatible API (see streamchat.tokens).

    Only a SHA-256 hash of the token is stored; the token itself is shown once, when it is made.
    ``prefix`` (the first characters, e.g. ``sc-AbCd12``) lets the user and admins tell tokens
    apart.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="streamchat_tokens",
        verbose_name=_("user"),
    )
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, editable=False)
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True, editable=False)
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    last_used = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    expires = models.DateTimeField(
        _("expires"), null=True, blank=True, help_text=_("Empty: the token does not expire.")
    )
    revoked = models.DateTimeField(_("revoked"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("personal API token")
        verbose_name_plural = _("personal API tokens")
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["user", "-created"], name="streamchat_token_user")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def status(self) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= timezone.now():
            return "expired"
        return "active"


class UpstreamProbe(models.Model):
    """What an upstream base URL said about itself: is it streamchat's simulator? (It says so with
    the ``X-Streamchat-Simulator`` header.) In the database, so every worker shows the same
    banner; written by ``streamchat.upstream``."""

    base_url = models.CharField(_("base URL"), max_length=500, unique=True)
    simulator = models.BooleanField(_("simulator"), default=False)
    answered = models.BooleanField(
        _("answered"), default=False, help_text=_("False: the probe got no HTTP answer.")
    )
    checked = models.DateTimeField(_("checked"), default=timezone.now)

    class Meta:
        verbose_name = _("upstream probe")
        verbose_name_plural = _("upstream probes")
        ordering = ["base_url"]

    def __str__(self) -> str:
        return f"{self.base_url}: {'simulator' if self.simulator else 'not the simulator'}"


class Tool(models.Model):
    """A function the host registered with ``@streamchat.tools.tool`` (one row each, synced after
    ``migrate`` and on first use). Admins switch a tool off here; the code defines the rest."""

    name = models.CharField(_("name"), max_length=64, unique=True, editable=False)
    description = models.TextField(_("description"), blank=True, editable=False)
    enabled = models.BooleanField(
        _("enabled"), default=True, help_text=_("Off: the model is never offered this tool.")
    )
    confirm = models.BooleanField(
        _("asks the user first"),
        default=False,
        editable=False,
        help_text=_("The user approves each call (the tool changes data)."),
    )
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("tool")
        verbose_name_plural = _("tools")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ToolCall(models.Model):
    """One call of a tool during a reply, as it ended (read-only in admin)."""

    class Status(models.TextChoices):
        OK = "ok", _("ok")
        ERROR = "error", _("error")
        TIMEOUT = "timeout", _("timed out")
        DECLINED = "declined", _("declined by the user")
        DENIED = "denied", _("not allowed")

    message = models.ForeignKey(
        Message,
        on_delete=models.CASCADE,
        related_name="tool_calls",
        verbose_name=_("reply"),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="streamchat_tool_calls",
        verbose_name=_("user"),
    )
    step = models.PositiveSmallIntegerField(_("step"), default=1)
    # Where the step sits in the reply's text (code points before it): resume places it there.
    offset = models.PositiveIntegerField(_("offset"), default=0)
    call_id = models.CharField(_("call id"), max_length=100)
    tool_name = models.CharField(_("tool"), max_length=64)
    arguments = models.TextField(_("arguments"), blank=True)
    result = models.TextField(_("result (summary)"), blank=True)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    error = models.TextField(_("error"), blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("tool call")
        verbose_name_plural = _("tool calls")
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.tool_name} ({self.status})"


class Assistant(models.Model):
    """A preset users pick in the chat like a model: a model with its own system prompt,
    temperature and tools. Admins define them here; the host may define them in code
    (``streamchat.tools.assistant``), synced like tools."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.CharField(
        _("description"), max_length=200, blank=True, help_text=_("Shown in the model picker.")
    )
    model = models.CharField(
        _("model"),
        max_length=200,
        help_text=_("An enabled chat model's id (e.g. openai/gpt-4o-mini)."),
    )
    system_prompt = models.TextField(
        _("system prompt"),
        blank=True,
        help_text=_("Replaces the model's own system prompt. Empty: the model's is used."),
    )
    temperature = models.DecimalField(
        _("temperature"),
        max_digits=3,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_("Empty: the model's default temperature."),
    )
    tools = models.ManyToManyField(
        Tool,
        blank=True,
        related_name="assistants",
        verbose_name=_("tools"),
        help_text=_(
            "The only tools its replies offer (each still needs the user's permission). "
            "None: no tools."
        ),
    )
    enabled = models.BooleanField(
        _("enabled"), default=True, help_text=_("Off: users cannot pick it.")
    )
    in_code = models.BooleanField(
        _("defined in code"),
        default=False,
        editable=False,
        help_text=_("Registered with streamchat.tools.assistant(): the code sets it again."),
    )
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("assistant")
        verbose_name_plural = _("assistants")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
