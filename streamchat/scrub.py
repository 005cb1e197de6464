"""One scrubber for every string that may carry a secret on its way out: upstream error messages
and bodies, provider and model names, error pages, admin.

It masks:

- every API key this process knows, in any form: whole, without its ``sk-or-v1-`` prefix, or any
  12-character piece of its secret part (an upstream that echoes a truncated key is masked too).
  Known keys are those decrypted here (each ``keys.KeyChoice`` remembers its secret: the plan's
  snapshot, the Python API, admin actions), keys saved through the admin form, the ``API_KEY``
  setting, and any secrets the caller passes;
- anything shaped like an OpenRouter key (``sk-or-…``), known or not;
- anything shaped like a personal API token (``sc-`` and 43 characters): only their hashes are
  stored, so the shape is what can be recognised.

A known key becomes its hint (``sk-or-v1-…a1b2``, as admin shows it), so an admin can tell which
key was echoed; an unknown one becomes ``sk-or-…``, a token ``sc-…``.

Cost: one dictionary lookup per character of the text (each 12-character window), plus two
regular expressions. It runs on error paths, once per reply for the provider and model names, and
in admin; never per delta.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

# Length of the pieces looked for: an echo shorter than this is not recognised as a key.
PIECE = 12
# Keys remembered per process (the newest kept): far more than a site has, bounded all the same.
MAX_KNOWN = 256

_PREFIX = re.compile(r"^(?:sk-or-(?:v\d+-)?|sc-)")
_PREFIX_BEFORE = re.compile(r"(?:sk-or-(?:v\d+-)?|sc-)$")
_KEY_LIKE = re.compile(r"sk-or-[A-Za-z0-9_-]{4,}")
_TOKEN_LIKE = re.compile(r"(?<![A-Za-z0-9_-])sc-[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")

_lock = threading.Lock()
_known: OrderedDict[str, None] = OrderedDict()
_index: dict[str, str] = {}  # every 12-character piece of a known key's secret part → its hint


def hint(secret: str) -> str:
    """``sk-or-v1-…a1b2``: the key's public prefix and its last four characters, nothing more."""
    secret = secret.strip()
    match = _PREFIX.match(secret)
    prefix = match.group(0) if match else ""
    return f"{prefix}…{secret[-4:]}" if len(secret) > len(prefix) + 8 else f"{prefix}…"


def remember(*secrets: str) -> None:
    """Add keys to this process's known secrets (cheap when they are known already)."""
    with _lock:
        changed = False
        for secret in secrets:
            if not secret:
                continue
            if secret in _known:
                _known.move_to_end(secret)
                continue
            _known[secret] = None
            changed = True
            while len(_known) > MAX_KNOWN:
                _known.popitem(last=False)
        if changed:
            _index.clear()
            for known in _known:
                _index.update(_pieces(known))


def _pieces(secret: str) -> dict[str, str]:
    """The secret part's 12-character pieces (the whole part when it is shorter) → the hint."""
    body = _PREFIX.sub("", secret.strip())
    label = hint(secret)
    if len(body) < PIECE:
        return {body: label} if len(body) >= 8 else {}
    return {body[i : i + PIECE]: label for i in range(len(body) - PIECE + 1)}


def _configured() -> str:
    # Read through the settings object each time: tests and deploys change it.
    from .conf import app_settings

    value = app_settings.API_KEY
    return value if isinstance(value, str) else ""


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known key (any form, any 12-character piece), every key-like string
    and every token-like string masked. ``secrets``: more keys to mask (e.g. the request's)."""
    if not text:
        return text
    index = _index
    extra = [s for s in (*secrets, _configured()) if s and s not in _known]
    if extra:
        index = dict(_index)
        for secret in extra:
            index.update(_pieces(secret))
    if index:
        text = _mask_known(text, index)
    if "sk-or-" in text:
        text = _KEY_LIKE.sub("sk-or-…", text)
    if "sc-" in text:
        text = _TOKEN_LIKE.sub("sc-…", text)
    return text


def scrub_data(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every string scrubbed, keys included."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {scrub_data(k, secrets): scrub_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_data(v, secrets) for v in value)
    return value


def _mask_known(text: str, index: dict[str, str]) -> str:
    """Replace each run of text covered by known pieces (and a key prefix right before it)."""
    sizes = sorted({len(p) for p in index}, reverse=True)
    spans: list[list[Any]] = []  # [start, end, hint], in order, merged when they touch
    for size in sizes:
        for i in range(len(text) - size + 1):
            label = index.get(text[i : i + size])
            if label is None:
                continue
            if spans and i <= spans[-1][1] and i >= spans[-1][0]:
                spans[-1][1] = max(spans[-1][1], i + size)
            else:
                spans.append([i, i + size, label])
    if not spans:
        return text
    spans.sort()
    merged: list[list[Any]] = []
    for span in spans:
        if merged and span[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], span[1])
        else:
            merged.append(span)
    out, position = [], 0
    for start, end, label in merged:
        prefix = _PREFIX_BEFORE.search(text, max(position, start - 12), start)
        if prefix is not None:
            start = prefix.start()
        out += [text[position:start], label]
        position = end
    out.append(text[position:])
    return "".join(out)
