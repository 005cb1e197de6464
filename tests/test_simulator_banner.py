"""The chat page's "replies come from the simulator" banner shows when the simulator itself says
so (its X-Streamchat-Simulator header), not for any loopback base URL: an egress proxy to the real
OpenRouter, or anything else that imitates it on loopback, gets no banner. The answer is stored in
the database (every worker reads the same) and probed once per base URL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from streamchat import upstream
from streamchat.models import UpstreamProbe

pytestmark = pytest.mark.django_db

BANNER = 'id="sc-simulator-notice"'


class _Imitation(BaseHTTPRequestHandler):
    """OpenRouter's /models in shape, from a plain loopback server without the simulator's
    header (as an egress proxy to the real OpenRouter would answer)."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"data": []}).encode()
        self.send_response(200 if self.path.endswith("/models") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def imitation() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Imitation)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    server.shutdown()
    server.server_close()
    thread.join()


def chat_page(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("streamchat:chat"))
    assert response.status_code == 200
    return response.content.decode()


def point_at(settings, base_url: str) -> None:
    settings.STREAMCHAT = {**settings.STREAMCHAT, "BASE_URL": base_url}


def models_requests(simulator) -> int:
    return sum(1 for r in simulator.requests if r.path.endswith("/models"))


def test_the_simulator_gets_the_banner_probed_once_and_stored(client, user, settings, simulator):
    point_at(settings, simulator.base_url)

    assert BANNER in chat_page(client, user)
    row = UpstreamProbe.objects.get(base_url=simulator.base_url)
    assert row.simulator and row.answered
    probes = models_requests(simulator)
    assert probes == 1
    # Later pages read the stored answer (any worker would): no new probe.
    assert BANNER in chat_page(client, user)
    assert models_requests(simulator) == probes
    UpstreamProbe.objects.filter(pk=row.pk).update(simulator=False)
    assert BANNER not in chat_page(client, user)


def test_a_loopback_imitation_of_openrouter_gets_no_banner(client, user, settings, imitation):
    point_at(settings, imitation)

    html = chat_page(client, user)

    assert BANNER not in html
    assert '"simulator": false' in html
    row = UpstreamProbe.objects.get(base_url=imitation)
    assert (row.simulator, row.answered) == (False, True)


def test_an_unreachable_base_url_gets_no_banner_and_is_probed_again_later(client, user, settings):
    point_at(settings, "http://127.0.0.1:9/api/v1")  # nothing listens on the discard port

    assert BANNER not in chat_page(client, user)
    row = UpstreamProbe.objects.get()
    assert (row.simulator, row.answered) == (False, False)
    checked = row.checked
    chat_page(client, user)  # a recent failed probe is not repeated on every page
    assert UpstreamProbe.objects.get().checked == checked
    UpstreamProbe.objects.update(checked=checked - upstream.dt.timedelta(seconds=601))
    chat_page(client, user)
    assert UpstreamProbe.objects.get().checked > checked - upstream.dt.timedelta(seconds=601)


def test_a_model_sync_learns_it_again(settings, simulator, imitation):
    from streamchat.catalog import fetch_and_sync

    point_at(settings, simulator.base_url)
    UpstreamProbe.objects.create(base_url=simulator.base_url, simulator=False, answered=True)
    fetch_and_sync()
    assert UpstreamProbe.objects.get(base_url=simulator.base_url).simulator

    point_at(settings, imitation)
    fetch_and_sync()
    assert not UpstreamProbe.objects.get(base_url=imitation).simulator
