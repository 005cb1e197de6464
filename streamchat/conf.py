"""streamchat's settings: one ``STREAMCHAT`` dict in the host's settings, read through
``app_settings``.

Every key, its default and its unit is listed in ``DEFAULTS``; README.md's settings table is checked
against it by the test suite. Code never reads ``settings.STREAMCHAT`` directly.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # --- OpenRouter -------------------------------------------------------------------------
    # Base URL of the OpenRouter API (the simulator's URL in development and tests).
    "BASE_URL": "https://openrouter.ai/api/v1",
    # An API key (str or None) used when no ApiKey row is usable (active and readable); the
    # first migrate stores it as an encrypted ApiKey row when there is none. The demo reads it
    # from OPENROUTER_API_KEY.
    "API_KEY": None,
    # Model used when neither the request nor an enabled ChatModel names one.
    "DEFAULT_MODEL": "openai/gpt-4o-mini",
    # Attribution headers sent to OpenRouter: HTTP-Referer and X-OpenRouter-Title (and X-Title).
    "APP_URL": "",
    "APP_TITLE": "streamchat",
    # --- Timeouts (seconds) -----------------------------------------------------------------
    # TCP connect to OpenRouter.
    "CONNECT_TIMEOUT": 10.0,
    # From request sent to first content or reasoning delta (keep-alive comments do not count).
    "FIRST_TOKEN_TIMEOUT": 60.0,
    # Longest gap between two deltas once the reply has started.
    "IDLE_TIMEOUT": 30.0,
    # Longest a whole reply may take.
    "TOTAL_TIMEOUT": 600.0,
    # --- Retries (before the first delta only) ----------------------------------------------
    # Retries after the first attempt, per key, on 408/429/5xx and connection errors.
    "MAX_RETRIES": 2,
    # Exponential backoff: base * 2**attempt seconds with full jitter, capped at BACKOFF_MAX.
    "BACKOFF_BASE": 0.5,
    "BACKOFF_MAX": 8.0,
    # A Retry-After longer than this (seconds) is not waited for: the user is told instead.
    "RETRY_AFTER_MAX": 20.0,
    # --- Websocket protocol -----------------------------------------------------------------
    # Largest incoming websocket frame the app accepts, in bytes (Daphne's own limit is 1 MiB).
    "MAX_FRAME_BYTES": 64 * 1024,
    # Largest user message, in characters.
    "MAX_MESSAGE_CHARS": 32_000,
    # Deltas arriving within this window (ms) share one frame; the first delta never waits.
    "DELTA_COALESCE_MS": 40,
    # How often (ms) a running reply publishes its new text to other workers' subscribers.
    "GROUP_BATCH_MS": 100,
    # Cancel the reply when the socket that asked for it closes (default: the reply outlives it).
    "CANCEL_ON_DISCONNECT": False,
    # Most websocket connections one user may hold open in one process (None: no cap). Above it
    # the socket is accepted, then closed with code 4429 (docs/protocol.md). Counted per worker
    # process: with N workers a user may hold up to N times this many.
    "MAX_SOCKETS_PER_USER": 20,
    # --- Capacity ---------------------------------------------------------------------------
    # Most replies one process runs at once (None: no cap). Above it new sends are refused with
    # the error code "overloaded" and a retry hint, so the replies already running keep pace.
    "MAX_ACTIVE_REPLIES": 1000,
    # The retry hint (s) sent with "overloaded".
    "OVERLOADED_RETRY_AFTER": 5,
    # A worker told to stop (SIGTERM) lets running replies finish for up to this long (s), then
    # ends the rest "interrupted" with all their text; keep the service manager's stop timeout
    # longer (docs/deploy.md).
    "DRAIN_SECONDS": 30.0,
    # How long (s) a worker keeps the enabled models, usable API keys and rate-limit rules it
    # read (every send needs them). Changes apply at once in the process that saves them, and
    # within this time in the others; 0 reads them for every send.
    "CONFIG_CACHE_SECONDS": 2.0,
    # Threads per process for the engine's database work, each keeping one connection open.
    # None: 1 on SQLite (its writers take turns anyway), 4 on other databases.
    "DATABASE_THREADS": None,
    # --- Persistence ------------------------------------------------------------------------
    # How often (ms) the text a streaming reply added since the last time is appended to its row.
    "CHECKPOINT_MS": 500,
    # A streaming reply whose worker has not renewed its lease for this long (s) is interrupted.
    "LEASE_SECONDS": 30,
    # Largest stored reply, in characters; beyond it the reply ends with finish reason "length".
    "MAX_REPLY_CHARS": 400_000,
    # --- Tools (the site's functions the model may call) -----------------------------------
    # Most upstream requests one chat reply makes: the first, plus one after each round of
    # tool calls. Each is admitted by the limits and gets its usage row.
    "MAX_TOOL_STEPS": 5,
    # Longest one tool call may run (s), unless its @tool(timeout=...) says otherwise.
    "TOOL_TIMEOUT": 30.0,
    # How long a confirm=True tool waits for the user's decision (s); then it is declined.
    "TOOL_CONFIRM_SECONDS": 120.0,
    # --- Secrets ----------------------------------------------------------------------------
    # Fernet keys (urlsafe base64, 32 bytes) for API keys at rest, newest first. Empty: one key
    # derived from SECRET_KEY (development only; a deploy check warns).
    "ENCRYPTION_KEYS": [],
    # --- Limits -----------------------------------------------------------------------------
    # Admit sends when the limit store cannot be read (default: refuse them).
    "LIMITS_FAIL_OPEN": False,
    # Completion tokens a budget reserves for a reply when neither the request nor the model sets
    # max tokens: the smaller of this and the model's completion cap (synced from OpenRouter),
    # never a whole context window. The reply is not cut there: an overrun is recorded and blocks
    # the next send (docs/limits.md).
    "RESERVE_MAX_TOKENS": 4096,
    # Staff users skip rate limits and budgets.
    "EXEMPT_STAFF": False,
    # --- HTTP: Server-Sent Events and the OpenAI-compatible API -------------------------------
    # A keep-alive comment goes out on an SSE stream after this many seconds without an event.
    "SSE_KEEPALIVE_SECONDS": 15.0,
    # Also store OpenAI-compatible API exchanges as conversations (default: only the usage row).
    "API_STORE_CONVERSATIONS": False,
    # Largest OpenAI-compatible API request body, in bytes (above it: 413).
    "API_MAX_REQUEST_BYTES": 1024 * 1024,
    # --- Attachments: images and PDFs (docs/http.md) -------------------------------------------
    # Where uploads are stored: None for Django's default storage, or an alias of STORAGES.
    # Files are served only by streamchat's owner-only view: keep them out of a public MEDIA_URL.
    "ATTACHMENT_STORAGE": None,
    # Largest upload, in bytes (refused before the rest of the body is read).
    "ATTACHMENT_MAX_BYTES": 10 * 1024 * 1024,
    # Most attachments on one message, and in one upload request.
    "ATTACHMENTS_PER_MESSAGE": 5,
    # Types accepted, each recognised by its content (never by name or declared type); images
    # are re-encoded without their metadata. SVG is never accepted (it may carry script).
    "ATTACHMENT_TYPES": ["image/png", "image/jpeg", "image/webp", "image/gif", "application/pdf"],
    # Longest PDF accepted, in pages.
    "ATTACHMENT_MAX_PDF_PAGES": 100,
    # OpenRouter's file-parser engine for PDFs: "native" sends them to models whose
    # input_modalities list "file"; "cloudflare-ai", "mistral-ocr" (paid) or "pdf-text" make
    # OpenRouter parse them to text, for any model.
    "PDF_ENGINE": "native",
    # --- Python API (streamchat.api) -----------------------------------------------------------
    # The user the Python API acts as when a call passes no user= (limits, budgets and usage
    # rows are that user's); created on first use, inactive and without a usable password.
    "SYSTEM_USERNAME": "streamchat-system",
    # --- Chat page ----------------------------------------------------------------------------
    # Content-Security-Policy header of the chat page (str), or None to send none (the host sets
    # its own). The default allows no inline script and no image from another origin.
    "CONTENT_SECURITY_POLICY": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'self'"
    ),
}


class AppSettings:
    """Attribute access to the merged settings: ``app_settings.BASE_URL``."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown streamchat setting {name!r}")
        return _merged()[name]

    def as_dict(self) -> dict[str, Any]:
        return dict(_merged())


@cache
def _merged() -> dict[str, Any]:
    user = getattr(settings, "STREAMCHAT", None) or {}
    return {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}


def unknown_keys() -> list[str]:
    """Keys in the host's STREAMCHAT dict that streamchat does not know (a system check reports
    them)."""
    user = getattr(settings, "STREAMCHAT", None) or {}
    if not isinstance(user, dict):
        return []
    return sorted(set(user) - set(DEFAULTS))


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "STREAMCHAT":
        _merged.cache_clear()


app_settings = AppSettings()
