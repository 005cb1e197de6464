"""One error base class and one code table (streamchat.exceptions) for every front end: every code
of docs/protocol.md's and docs/http.md's error tables is in ``CODES`` with the documented status,
and a few codes as each front end answers them (session JSON API / SSE, OpenAI-compatible API,
websocket frames, ``reply.finished.error``). No database, no server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streamchat.exceptions import (
    CODES,
    ChatError,
    StreamchatError,
    error_code,
    error_frame,
    http_status,
    not_found,
    openai_error,
)
from streamchat.http.openai_compat import _refused, api_error
from streamchat.http.responses import error_response
from streamchat.limits import LimitError, LimitExceeded, LimitsUnavailable
from streamchat.openrouter.errors import OpenRouterError, from_status

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _section(path: Path, heading: str) -> str:
    """The text of the section under ``heading`` (up to the next heading of any level)."""
    text = path.read_text()
    start = text.index(heading + "\n")
    end = re.compile(r"^#", re.M).search(text, start + len(heading))
    return text[start : end.start() if end else len(text)]


def _rows(section: str, first_header: str | None = None) -> list[list[str]]:
    """The table rows of ``section`` as lists of cells (header and rule rows left out); with
    ``first_header``, only those of the table whose first header cell it is."""
    tables: list[list[list[str]]] = []
    previous_was_row = False
    for line in section.splitlines():
        if not line.startswith("|"):
            previous_was_row = False
            continue
        if set(line) <= {"|", "-", " "}:
            continue
        if not previous_was_row:
            tables.append([])
        previous_was_row = True
        tables[-1].append([cell.strip() for cell in line.strip("|").split("|")])
    return [
        row
        for table in tables
        if first_header is None or table[0][0] == first_header
        for row in table[1:]
    ]


def _codes(cell: str) -> list[str]:
    return re.findall(r"`([a-z_]+)`", cell)


PROTOCOL_CODES = sorted(
    {
        code
        for row in _rows(_section(DOCS / "protocol.md", "## Error codes"))
        for code in _codes(row[0] + " " + row[1] if row[0] == "upstream codes" else row[0])
    }
)
HTTP_ROWS = [
    (int(row[0]), code)
    for row in _rows(
        _section(DOCS / "http.md", "## Errors and statuses (session JSON API and SSE)")
    )
    for code in _codes(row[1])
]
OPENAI_ROWS = [
    (row[0], code)
    for row in _rows(_section(DOCS / "http.md", "### `POST v1/chat/completions`"), "status")
    for code in _codes(row[1])
]


def test_the_doc_tables_were_read() -> None:
    # A renamed heading or a reshaped table must not make the tests below check nothing.
    assert {"bad_json", "auth_expired", "upstream_rate_limited", "no_api_key"} <= set(
        PROTOCOL_CODES
    )
    assert len(PROTOCOL_CODES) >= 25
    assert len(HTTP_ROWS) >= 11
    openai_codes = {code for _, code in OPENAI_ROWS}
    assert {"invalid_api_key", "model_not_found", "stream_error"} <= openai_codes
    assert len(OPENAI_ROWS) >= 12


@pytest.mark.parametrize("code", PROTOCOL_CODES)
def test_every_protocol_code_is_in_the_table(code: str) -> None:
    assert code in CODES


@pytest.mark.parametrize(("status", "code"), HTTP_ROWS)
def test_every_session_api_code_has_its_documented_status(status: int, code: str) -> None:
    assert code in CODES
    assert http_status(code) == status


@pytest.mark.parametrize(("status", "code"), OPENAI_ROWS)
def test_every_openai_code_has_its_documented_status(status: str, code: str) -> None:
    assert code in CODES
    if status.isdigit():
        assert openai_error(code).status == int(status)
    elif status[0].isdigit():  # "502, 503, 504": the upstream codes
        assert openai_error(code).status in {int(s) for s in status.split(",")}


def test_every_code_has_an_error_status() -> None:
    for code, entry in CODES.items():
        assert 400 <= entry.status <= 599, code
        assert entry.openai_type.endswith("_error"), code
        assert entry.openai_code is None or entry.openai_code in CODES, code


# -- the session JSON API and SSE ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (ChatError("busy", "Busy."), 409, {"code": "busy", "message": "Busy."}),
        (
            ChatError("invalid", "Bad.", field="model"),
            400,
            {"code": "invalid", "message": "Bad.", "field": "model"},
        ),
        (not_found("reply"), 404, {"code": "not_found", "message": "No such reply."}),
        (
            LimitsUnavailable("Cannot check."),
            503,
            {"code": "limits_unavailable", "message": "Cannot check."},
        ),
        # A code nobody listed is a refusal: 400 here (502 on the OpenAI-compatible API).
        (ChatError("something_new", "New."), 400, {"code": "something_new", "message": "New."}),
    ],
)
def test_session_api_answers(error: StreamchatError, status: int, body: dict[str, str]) -> None:
    response = error_response(error)
    assert response.status_code == status
    assert json.loads(response.content) == body
    assert not response.has_header("Retry-After")


def test_session_api_rate_limited_sends_retry_after() -> None:
    response = error_response(
        LimitExceeded("requests_per_minute", retry_after=2.34, message="Slow down.")
    )
    assert response.status_code == 429
    assert json.loads(response.content) == {
        "code": "rate_limited",
        "message": "Slow down.",
        "retry_after": 2.3,
    }
    assert response["Retry-After"] == "3"


# -- the OpenAI-compatible API ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "kind", "shown"),
    [
        ("invalid", 400, "invalid_request_error", "invalid"),
        ("invalid_api_key", 401, "authentication_error", "invalid_api_key"),
        ("model_unavailable", 404, "invalid_request_error", "model_not_found"),
        ("unknown_model", 404, "invalid_request_error", "unknown_model"),
        ("message_too_large", 413, "invalid_request_error", "message_too_large"),
        ("rate_limited", 429, "rate_limit_error", "rate_limited"),
        ("upstream_rate_limited", 429, "rate_limit_error", "upstream_rate_limited"),
        ("upstream_unavailable", 502, "server_error", "upstream_unavailable"),
        ("incomplete", 502, "server_error", "incomplete"),
        ("no_api_key", 503, "server_error", "no_api_key"),
        ("limits_unavailable", 503, "server_error", "limits_unavailable"),
        ("first_token_timeout", 504, "server_error", "first_token_timeout"),
        # A code nobody listed came from upstream: 502 here (400 on the session JSON API).
        ("something_new", 502, "server_error", "something_new"),
    ],
)
def test_openai_api_answers(code: str, status: int, kind: str, shown: str) -> None:
    assert tuple(openai_error(code)) == (status, kind, shown)
    response = api_error(code, "Refused.", param="model")
    assert response.status_code == status
    assert json.loads(response.content) == {
        "error": {"message": "Refused.", "type": kind, "param": "model", "code": shown}
    }


def test_openai_api_names_a_disabled_model_model_not_found() -> None:
    response = _refused(ChatError("model_unavailable", "Not available.", field="model"))
    assert response.status_code == 404
    assert json.loads(response.content)["error"] == {
        "message": "Not available. GET /v1/models lists the models you can use.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_openai_api_shows_openrouters_429_as_upstream_rate_limited() -> None:
    response = _refused(from_status(429, {}, {"retry-after": "7"}))
    assert response.status_code == 429
    assert response["Retry-After"] == "7"
    assert json.loads(response.content)["error"]["code"] == "upstream_rate_limited"


# -- the websocket and reply.finished -----------------------------------------------------------


def test_as_frame_is_the_websocket_error_frame() -> None:
    error = ChatError("invalid", "Bad.", field="content", retry_after=1.26)
    assert error.as_frame(client_id="c1", reply=None) == {
        "type": "error",
        "code": "invalid",
        "message": "Bad.",
        "field": "content",
        "retry_after": 1.3,
        "client_id": "c1",
    }
    assert LimitExceeded("tokens_per_day", retry_after=None, message="Enough.").as_frame() == {
        "type": "error",
        "code": "rate_limited",
        "message": "Enough.",
    }


@pytest.mark.parametrize(
    ("error", "frame"),
    [
        (None, None),
        (
            OpenRouterError("rate_limited", "Rate limited.", status=429, retry_after=3.14),
            {"code": "upstream_rate_limited", "message": "Rate limited.", "retry_after": 3.1},
        ),
        (
            OpenRouterError("idle_timeout", "No data.", retriable=True),
            {"code": "idle_timeout", "message": "No data."},
        ),
    ],
)
def test_error_frame_is_reply_finished_error(
    error: OpenRouterError | None, frame: dict[str, object] | None
) -> None:
    assert error_frame(error) == frame
    assert error_code(error) == (frame["code"] if frame else "")


# -- one base class, constructors as before -----------------------------------------------------


def test_every_error_type_is_a_streamchat_error_with_its_old_attributes() -> None:
    upstream = OpenRouterError(
        "rate_limited", "Slow.", status=429, retry_after=2.0, retriable=True, generation_id="g1"
    )
    assert isinstance(upstream, StreamchatError) and not isinstance(upstream, ChatError)
    assert (upstream.code, upstream.public_code) == ("rate_limited", "upstream_rate_limited")
    assert (upstream.status, upstream.retriable, upstream.generation_id) == (429, True, "g1")
    assert upstream.field is None and str(upstream) == "Slow."

    refused = ChatError("busy", "Busy.")
    assert isinstance(refused, StreamchatError)
    assert (refused.public_code, refused.field, refused.retry_after) == ("busy", None, None)

    limit = LimitExceeded("requests_per_minute", retry_after=5.0, message="Wait.")
    assert isinstance(limit, LimitError) and isinstance(limit, StreamchatError)
    assert LimitExceeded.code == LimitError.code == limit.public_code == "rate_limited"
    assert (limit.limit, limit.retry_after, limit.message) == ("requests_per_minute", 5.0, "Wait.")
    assert LimitsUnavailable.code == LimitsUnavailable("Down.").code == "limits_unavailable"
    assert str(LimitsUnavailable("Down.")) == "Down."
