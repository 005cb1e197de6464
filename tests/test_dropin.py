"""Drop-in: README's "Add to your site", carried out on a brand-new Django site.

One clean virtualenv gets the built wheel of django-streamchat (not the source tree) with README's
``pip install`` lines, and the oldest release of every dependency that pyproject.toml claims
(Django 5.2.0, Channels 4.1.0, ...): the rest of the suite runs on the newest ones. README's
blocks and commands, read from README.md itself, are carried out as written (the test adds no line
of its own; it only puts its simulator's URL and the hosts' prefixes in place of README's) on:

- ``new``: exactly what ``django-admin startproject`` made (DEBUG on, no login page, no
  templates): the minimal drop-in (at most ten lines of settings, URLs and ASGI) and
  ``python manage.py runserver``, logging in through the admin's login page; then, on the same
  site, the production step (ServeStatic, ``collectstatic``, an encryption key and
  ``rotate_encryption_keys``) under Daphne;
- ``default``: an existing site (a base template, a login page, DEBUG off) with Django's user
  model, the chat under ``chat/``, the in-memory channel layer, README's layout and production
  blocks;
- ``custom-user``: the same with the host's own user model (the email address as login name), the
  chat under ``team/talk/``, and README's Redis block (a channel layer shared by server processes).

The existing sites are served by Daphne and by uvicorn, exactly as README's command lines say, with
the simulator as OpenRouter (README's offline block, and ``OPENROUTER_API_KEY``, which README's
settings read). A client logs in over HTTP and streams a reply over the websocket
(docs/protocol.md), over Server-Sent Events and through the OpenAI-compatible API (docs/http.md);
the chat page renders inside the host's layout (or the new site's bare page) in headless Chromium,
with its static files (collected by ``ManifestStaticFilesStorage`` and served by ServeStatic, or
served by ``runserver``), and streams a reply too.

The time from an empty folder (no virtualenv yet) to the first streamed reply on the new site is
printed and written to test-artifacts/dropin-timing.txt.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamchat.simulator.replies import DEFAULT_REPLY
from tests.dropin import readme as readme_module
from tests.dropin.host import ADMIN, ROOT, HostSite, Server, Toolchain, build_wheel
from tests.services import IN_CI, chromium, reachable

pytestmark = [pytest.mark.once]

ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "drop-in-pass-4821"
REDIS_URL = "redis://127.0.0.1:6379/14"  # not the suite's database 15, which tests flush
EXTRAS = ["redis"]  # README's pip line brings "daphne"; the custom-user host uses Redis
PRODUCTION = "for production"
LAYOUT = "for your site's layout"
OFFLINE = "to try it offline"
SEVERAL_PROCESSES = "for several server processes"


class Timeline:
    """Moments since the empty folder, for the report."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: list[tuple[str, float]] = []

    def mark(self, what: str) -> None:
        self.marks.append((what, time.monotonic() - self.start))

    def report(self) -> str:
        return "\n".join(f"{seconds:7.1f} s  {what}" for what, seconds in self.marks)


TIMELINE: dict[str, Timeline] = {}


def lower_bounds(extras: list[str]) -> dict[str, str]:
    """pyproject.toml's lower bound of every runtime dependency and of ``extras``' dependencies:
    ``{"channels": "4.1", ...}``. Each must have one (``name>=X``), so each is tested."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    bounds = {}
    for requirement in requirements:
        match = re.fullmatch(r"([\w-]+)\s*>=\s*([\d.]+)\s*(,\s*<\s*[\d.]+)?", requirement)
        assert match, f"pyproject.toml: {requirement!r} has no lower bound to test"
        bounds[match.group(1).lower()] = match.group(2)
    return bounds


# --- fixtures: one wheel, one virtualenv, two hosts, two servers each ---------------------------


@pytest.fixture(scope="module")
def readme() -> readme_module.Section:
    return readme_module.parse()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def toolchain(
    readme: readme_module.Section, wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Toolchain]:
    folder = tmp_path_factory.mktemp("dropin")
    timeline = TIMELINE.setdefault("first", Timeline())  # the folder is empty: the clock starts
    toolchain = Toolchain.create(
        folder / "venv",
        readme=readme,
        wheel=wheel,
        extras=EXTRAS,
        also=[f"{name}=={floor}" for name, floor in lower_bounds(["daphne", *EXTRAS]).items()],
    )
    timeline.mark("virtualenv with django-streamchat installed from the wheel")
    yield toolchain
    shutil.rmtree(folder, ignore_errors=True)  # a quarter of a gigabyte, kept by pytest otherwise


HOSTS = {
    "default": {"prefix": "chat/", "custom_user": False, "redis": False},
    "custom-user": {"prefix": "team/talk/", "custom_user": True, "redis": True},
}
# Every host under every server; the first one is what the timing follows.
SITES = ["default-daphne", "default-uvicorn", "custom-user-daphne", "custom-user-uvicorn"]


@dataclass
class Served:
    name: str
    host: HostSite
    server: Server


@pytest.fixture(scope="module")
def hosts(
    toolchain: Toolchain,
    readme: readme_module.Section,
    _simulator_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], HostSite]]:
    """``hosts(name)``: the host site ``name`` of HOSTS, made on first use."""
    made: dict[str, HostSite] = {}

    def get(name: str) -> HostSite:
        if name not in made:
            made[name] = make_host(name, toolchain, readme, _simulator_server, tmp_path_factory)
            TIMELINE["first"].mark(
                f"{name} host: startproject, README applied, migrate, collectstatic"
            )
        return made[name]

    yield get
    for site in made.values():
        shutil.rmtree(site.folder.parent, ignore_errors=True)


def make_host(
    name: str,
    toolchain: Toolchain,
    readme: readme_module.Section,
    simulator: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> HostSite:
    choice = HOSTS[name]
    env = {"OPENROUTER_API_KEY": simulator.api_key, "STREAMCHAT_ENCRYPTION_KEYS": fernet_key()}
    purposes = [OFFLINE, LAYOUT, PRODUCTION]
    if choice["redis"]:
        if reachable("127.0.0.1", 6379):
            purposes.append(SEVERAL_PROCESSES)
            env["REDIS_URL"] = REDIS_URL
        elif IN_CI:
            pytest.fail("Redis is not reachable on 127.0.0.1:6379, and CI must run this test.")
    site = HostSite.create(
        toolchain,
        tmp_path_factory.mktemp(name),
        readme=readme,
        upstream=simulator.base_url,
        prefix=str(choice["prefix"]),
        custom_user=bool(choice["custom_user"]),
        purposes=tuple(purposes),
        env=env,
    )
    site.run_readme_commands(readme, PRODUCTION)
    site.create_user(PASSWORD)
    return site


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.fixture(scope="module", params=SITES)
def served(
    request: pytest.FixtureRequest,
    hosts: Callable[[str], HostSite],
    readme: readme_module.Section,
) -> Iterator[Served]:
    """A host site under one server, started with README's command line."""
    name, _, program = request.param.rpartition("-")
    host = hosts(name)
    ARTIFACTS.mkdir(exist_ok=True)
    server = Server(host, readme.command(program), ARTIFACTS / f"dropin-{request.param}.log")
    TIMELINE["first"].mark(f"{request.param}: {program} listening")
    yield Served(request.param, host, server)
    server.stop()


@pytest.fixture(scope="module")
def new_site(
    toolchain: Toolchain,
    readme: readme_module.Section,
    _simulator_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HostSite]:
    """What startproject made, with README's minimal drop-in, offline block and commands."""
    ARTIFACTS.mkdir(exist_ok=True)  # the servers' logs
    site = HostSite.create(
        toolchain,
        tmp_path_factory.mktemp("new"),
        readme=readme,
        upstream=_simulator_server.base_url,
        name="mysite",
        existing=False,
        purposes=(readme_module.NEW_SITE, OFFLINE),
        env={"OPENROUTER_API_KEY": _simulator_server.api_key},
    )
    site.run_readme_commands(readme)
    TIMELINE["first"].mark("new site: startproject, README's ten lines, migrate, createsuperuser")
    yield site
    shutil.rmtree(site.folder.parent, ignore_errors=True)


# --- clients ----------------------------------------------------------------------------------


def log_in(server: Server, host: HostSite) -> httpx.Client:
    """The host's login page, as a browser uses it: an httpx client holding the session cookie."""
    client = httpx.Client(base_url=server.url, timeout=10)
    page = client.get("/accounts/login/")
    assert page.status_code == 200, page.text[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    response = client.post(
        "/accounts/login/",
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": host.login,
            "password": PASSWORD,
            "next": f"/{host.prefix}",
        },
    )
    assert response.status_code == 302, response.text[:1000]
    assert response.headers["location"] == f"/{host.prefix}"
    assert "sessionid" in client.cookies
    return client


def log_in_as_admin(server: Server, prefix: str) -> httpx.Client:
    """The admin's login page (README's LOGIN_URL for a new site), with README's superuser."""
    client = httpx.Client(base_url=server.url, timeout=10)
    anonymous = client.get(f"/{prefix}")
    assert anonymous.status_code == 302
    login_url = anonymous.headers["location"]
    assert login_url == f"/admin/login/?next=/{prefix}", login_url
    page = client.get(login_url)
    assert page.status_code == 200, page.text[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    response = client.post(
        login_url,
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": ADMIN["username"],
            "password": ADMIN["password"],
            "next": f"/{prefix}",
        },
    )
    assert response.status_code == 302, response.text[:1000]
    assert response.headers["location"] == f"/{prefix}"
    return client


def chat_page_static_files(client: httpx.Client, prefix: str) -> list[str]:
    """The chat page's script and stylesheet URLs, each asserted to be served."""
    page = client.get(f"/{prefix}")
    assert page.status_code == 200
    assert 'id="streamchat-config"' in page.text
    urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert any(url.startswith("/static/streamchat/chat") for url in urls), urls
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, f"{url}: {response.status_code}"
    return urls


def mark_first_reply(capsys: pytest.CaptureFixture[str]) -> None:
    """The timeline's last mark, on the first streamed reply of the run: printed and saved."""
    timeline = TIMELINE["first"]
    if any(what.startswith("first streamed reply") for what, _ in timeline.marks):
        return
    timeline.mark("first streamed reply finished")
    report = "Drop-in, from an empty folder:\n" + timeline.report()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dropin-timing.txt").write_text(report + "\n")
    with capsys.disabled():
        print("\n" + report)


async def stream_reply(server: Server, cookie: str, content: str) -> dict[str, Any]:
    """One ``send`` over the websocket: the frames until ``reply.finished``, and the text."""
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    ws_url = server.url.replace("http://", "ws://") + "/ws/streamchat/"
    frames: list[dict[str, Any]] = []
    text = ""
    async with connect(
        ws_url, origin=Origin(server.url), additional_headers={"Cookie": cookie}, open_timeout=10
    ) as socket:
        hello = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert hello["type"] == "hello" and hello["protocol"] == 1, hello
        await socket.send(
            json.dumps(
                {
                    "type": "send",
                    "client_id": uuid.uuid4().hex,
                    "content": content,
                    "conversation": None,
                }
            )
        )
        while True:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 15))
            frames.append(frame)
            if frame["type"] == "error":
                raise AssertionError(f"error frame: {frame}")
            if frame["type"] == "delta":
                assert frame["offset"] == len(text), f"gap or repeat at {frame['offset']}"
                text += frame["text"]
            if frame["type"] == "reply.finished":
                return {"frames": frames, "text": text, "finished": frame, "hello": hello}


async def foreign_origin_refused(server: Server, cookie: str) -> bool:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus
    from websockets.typing import Origin

    ws_url = server.url.replace("http://", "ws://") + "/ws/streamchat/"
    try:
        async with connect(
            ws_url,
            origin=Origin("http://evil.example"),
            additional_headers={"Cookie": cookie},
        ):
            return False
    except InvalidStatus as refused:
        return refused.response.status_code == 403


# --- tests ------------------------------------------------------------------------------------


def test_readme_minimal_drop_in_is_at_most_ten_host_lines() -> None:
    """README's settings, URLs and ASGI blocks for a new site: at most ten lines that are not
    blank or comments; production, offline and layout blocks stay apart (with their purpose)."""
    section = readme_module.parse()
    lines = section.minimal_lines()
    assert len(lines) <= readme_module.MINIMAL_LINES, "\n".join(lines)
    assert {block.path for block in section.file_blocks(readme_module.NEW_SITE)} == {
        "mysite/settings.py",
        "mysite/urls.py",
        "mysite/asgi.py",
    }
    # Production needs come after the development run, in blocks of their own.
    minimal = "\n".join(lines)
    for production_only in ("STATIC_ROOT", "servestatic", "ENCRYPTION_KEYS", "channels_redis"):
        assert production_only not in minimal, production_only
    commands = [line for block in section.command_blocks() for line in block.lines]
    assert "python manage.py collectstatic --noinput" not in commands
    production = section.command_blocks(PRODUCTION, common=False)
    assert any("collectstatic" in line for block in production for line in block.lines)
    settings = "\n".join(block.code for block in section.file_blocks(PRODUCTION, common=False))
    assert "STATIC_ROOT" in settings and '"servestatic"' in settings


def test_dropin_new_site_in_development(
    new_site: HostSite,
    readme: readme_module.Section,
    simulator: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README steps 1 to 5 on what startproject made: runserver (DEBUG on, static files from the
    apps, no collectstatic), the admin's login page, a reply over the websocket."""
    assert new_site.manage("check").strip().startswith("System check identified no issues")
    command = next(
        line for line in readme.command_lines("python") if line.endswith("manage.py runserver")
    )
    server = Server(new_site, command, ARTIFACTS / "dropin-new-runserver.log")
    try:
        TIMELINE["first"].mark("new site: runserver listening")
        client = log_in_as_admin(server, "chat/")
        urls = chat_page_static_files(client, "chat/")
        assert "/static/streamchat/chat/main.js" in urls  # DEBUG: the apps' files, not collected
        cookie = f"sessionid={client.cookies['sessionid']}"
        result = asyncio.run(stream_reply(server, cookie, "Hello from a new site"))
        assert result["finished"]["status"] == "complete"
        assert result["text"] == DEFAULT_REPLY
        mark_first_reply(capsys)
        assert asyncio.run(foreign_origin_refused(server, cookie))
        assert server.problems() == []
    finally:
        server.stop()


@pytest.mark.browser
def test_dropin_new_site_chat_page_streams_in_chromium(
    new_site: HostSite, readme: readme_module.Section, simulator: Any
) -> None:
    command = next(
        line for line in readme.command_lines("python") if line.endswith("manage.py runserver")
    )
    server = Server(new_site, command, ARTIFACTS / "dropin-new-runserver-chromium.log")
    failures: list[str] = []
    errors: list[str] = []
    try:
        with chromium() as browser:
            try:
                context = browser.new_context(base_url=server.url)
                context.set_default_timeout(15_000)
                page = context.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on(
                    "response",
                    lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None,
                )
                page.goto("/chat/")
                assert "/admin/login/" in page.url
                page.fill("input[name=username]", ADMIN["username"])
                page.fill("input[name=password]", ADMIN["password"])
                with page.expect_navigation():
                    page.click("input[type=submit]")
                page.locator("#sc-input").wait_for()
                assert page.url.endswith("/chat/")
                app_display = page.eval_on_selector(
                    "#streamchat", "e => getComputedStyle(e).display"
                )
                assert app_display != "block", "chat.css is not applied"
                page.fill("#sc-input", "Hello from Chromium on a new site")
                page.press("#sc-input", "Enter")
                reply = page.locator('.sc-msg--assistant[data-status="complete"]')
                reply.wait_for()
                assert "OpenRouter simulator" in reply.locator(".sc-body").inner_text()
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dropin-new-runserver.png"))
            finally:
                browser.close()
        # A bare startproject site has no favicon, and Chromium asks for /favicon.ico (not as a
        # page response): the only 404 allowed.
        not_found = [line for line in server.log_path.read_text().splitlines() if " 404 " in line]
        assert all("GET /favicon.ico " in line for line in not_found), not_found
        if not_found:
            errors = [
                e for e in errors if not e.startswith("Failed to load resource") or "404" not in e
            ]
        assert failures == [], failures
        assert errors == [], errors
        assert server.problems() == []
    finally:
        server.stop()


def test_dropin_new_site_then_production(
    new_site: HostSite, readme: readme_module.Section, simulator: Any
) -> None:
    """README step 6 on the same site after the development run (DEBUG still on, as startproject
    left it): ServeStatic, collectstatic, a dedicated encryption key with the API key stored in
    development rotated under it, Daphne. ServeStatic and Django have nothing to warn about."""
    new_site.env_extra["STREAMCHAT_ENCRYPTION_KEYS"] = fernet_key()
    new_site.apply(readme, PRODUCTION, common=False)
    outputs = new_site.run_readme_commands(readme, PRODUCTION, common=False)
    assert "static files copied" in outputs["collectstatic"], outputs["collectstatic"]
    assert "re-encrypted 1, already current 0, unreadable 0" in outputs["rotate_encryption_keys"]
    assert new_site.manage("check").strip().startswith("System check identified no issues")
    server = Server(new_site, readme.command("daphne"), ARTIFACTS / "dropin-new-daphne.log")
    try:
        client = log_in_as_admin(server, "chat/")
        chat_page_static_files(client, "chat/")  # Daphne serves none: ServeStatic does
        cookie = f"sessionid={client.cookies['sessionid']}"
        result = asyncio.run(stream_reply(server, cookie, "Hello in production"))
        assert result["finished"]["status"] == "complete"  # the rotated key opens
        assert result["text"] == DEFAULT_REPLY
        assert server.problems() == []
    finally:
        server.stop()


def test_dropin_installs_the_wheel_with_the_oldest_claimed_dependencies(
    toolchain: Toolchain,
) -> None:
    """The virtualenv runs streamchat from the wheel (not this source tree), on the lower bound of
    every dependency that pyproject.toml declares."""
    import tomllib

    from packaging.version import Version

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert toolchain.version("django-streamchat") == version
    for name, floor in lower_bounds(["daphne", *EXTRAS]).items():
        assert Version(toolchain.version(name)) == Version(floor), name
    assert Version(toolchain.version("django")).release[:2] == (5, 2)
    location = Path(toolchain.module_file("streamchat"))
    assert location.is_relative_to(toolchain.path), location
    assert (location.parent / "templates" / "streamchat" / "chat.html").exists()


def test_dropin_login_then_a_reply_streams_over_the_websocket(
    served: Served, simulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    host, server = served.host, served.server
    simulator.token_delay = 0.005  # about 100 tokens: several frames of coalesced deltas
    client = log_in(server, host)
    cookie = f"sessionid={client.cookies['sessionid']}"
    result = asyncio.run(stream_reply(server, cookie, "Hello from the drop-in test"))
    finished = result["finished"]
    assert finished["status"] == "complete", finished
    assert result["text"] == DEFAULT_REPLY
    assert finished["length"] == len(DEFAULT_REPLY)
    deltas = [frame for frame in result["frames"] if frame["type"] == "delta"]
    assert len(deltas) >= 2  # streamed, not one blob
    assert finished["usage"]["completion_tokens"] > 0

    mark_first_reply(capsys)

    # README's ASGI block checks the Origin: another site's page cannot open the socket.
    assert asyncio.run(foreign_origin_refused(server, cookie))
    assert server.problems() == []


def test_dropin_sse_and_the_openai_compatible_api_stream_replies(
    served: Served, simulator: Any
) -> None:
    """The HTTP front ends (docs/http.md) under the host's prefix: Server-Sent Events with the
    session, and the ``openai`` SDK with a personal token."""
    from openai import OpenAI

    host, server = served.host, served.server
    client = log_in(server, host)
    text = ""
    with client.stream(
        "POST",
        f"/{host.prefix}api/stream/",
        json={"client_id": uuid.uuid4().hex, "content": "Hello over SSE", "conversation": None},
        headers={"X-CSRFToken": client.cookies["csrftoken"]},
    ) as response:
        assert response.status_code == 200, response.read()[:500]
        assert response.headers["content-type"].startswith("text/event-stream")
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                events.append(event)
                if event["type"] == "delta":
                    assert event["offset"] == len(text)
                    text += event["text"]
    assert [e["type"] for e in events][-2:] == ["reply.finished", "end"]
    assert events[-2]["status"] == "complete" and text == DEFAULT_REPLY

    api = OpenAI(base_url=f"{server.url}/{host.prefix}v1", api_key=host.api_token, max_retries=0)
    chunks = api.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello through the OpenAI SDK"}],
        stream=True,
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == DEFAULT_REPLY
    assert server.problems() == []


def test_dropin_chat_page_is_served_with_hashed_static_files(served: Served) -> None:
    host, server = served.host, served.server
    anonymous = httpx.get(f"{server.url}/{host.prefix}", timeout=10)
    assert anonymous.status_code == 302
    assert anonymous.headers["location"].startswith("/accounts/login/")

    client = log_in(server, host)
    page = client.get(f"/{host.prefix}")
    assert page.status_code == 200
    assert 'id="host-header"' in page.text  # inside the host's base template
    assert 'id="streamchat-config"' in page.text
    # ManifestStaticFilesStorage names (DEBUG is off), every one served.
    scripts = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    hashed = r"/static/streamchat/chat/main\.[0-9a-f]{12}\.js"
    assert any(re.fullmatch(hashed, url) for url in scripts), scripts
    for url in scripts:
        response = client.get(url)
        assert response.status_code == 200, f"{url}: {response.status_code}"
    # The page's ES modules import each other by hashed names too (the README's storage), all
    # the way down: no module loads an unhashed sibling that a cache could keep after a deploy.
    modules = [url for url in scripts if re.fullmatch(hashed, url)]
    seen = set(modules)
    while modules:
        url = modules.pop()
        source = client.get(url).text
        for name in re.findall(r"""\bfrom\s*["'](\./[^"']+)["']""", source):
            assert re.fullmatch(r"\./[a-z0-9_]+\.[0-9a-f]{12}\.js", name), f"{url} imports {name}"
            imported = url.rsplit("/", 1)[0] + name[1:]
            if imported not in seen:
                assert client.get(imported).status_code == 200, imported
                seen.add(imported)
                modules.append(imported)
    assert len(seen) > 5, seen
    assert server.problems() == []


@pytest.mark.browser
def test_dropin_chat_page_renders_and_streams_in_chromium(served: Served, simulator: Any) -> None:
    host, server = served.host, served.server
    failures: list[str] = []
    errors: list[str] = []
    with chromium() as browser:
        try:
            context = browser.new_context(base_url=server.url)
            context.set_default_timeout(15_000)
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on(
                "response",
                lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )
            page.goto(f"/{host.prefix}")
            assert "/accounts/login/" in page.url
            page.fill("input[name=username]", host.login)
            page.fill("input[name=password]", PASSWORD)
            with page.expect_navigation():
                page.click("#host-login button[type=submit]")
            page.locator("#sc-input").wait_for()
            assert page.url.endswith(f"/{host.prefix}")
            # The host's layout around the chat, with both stylesheets applied.
            assert page.locator("#host-main #streamchat").count() == 1
            header = page.eval_on_selector(
                "#host-header", "e => getComputedStyle(e).backgroundColor"
            )
            assert header == "rgb(1, 2, 3)"
            # The chat fits under the host's header: the page itself does not scroll.
            assert page.evaluate(
                "() => document.documentElement.scrollHeight <= window.innerHeight"
            )
            app_display = page.eval_on_selector("#streamchat", "e => getComputedStyle(e).display")
            assert app_display != "block", "chat.css is not applied"
            page.fill("#sc-input", "Hello from Chromium")
            page.press("#sc-input", "Enter")
            reply = page.locator('.sc-msg--assistant[data-status="complete"]')
            reply.wait_for()
            assert "OpenRouter simulator" in reply.locator(".sc-body").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"dropin-{served.name}.png"))
        finally:
            browser.close()
    assert failures == [], failures
    assert errors == [], errors
    assert server.problems() == []


def test_dropin_model_sync_command_reaches_openrouter(
    hosts: Callable[[str], HostSite], simulator: Any
) -> None:
    """The SDK's sync client (admin's key check and model sync) works with the oldest openai."""
    output = hosts("default").manage("sync_openrouter_models")
    assert "Synced from OpenRouter" in output, output


def test_readme_names_every_block_of_the_chat_page() -> None:
    template = (ROOT / "streamchat" / "templates" / "streamchat" / "chat.html").read_text()
    blocks = set(re.findall(r"{% block (\w+) %}", template))
    section = readme_module.section_text()
    missing = sorted(block for block in blocks if f"`{block}`" not in section)
    assert not missing, f"README's 'Add to your site' does not name the blocks {missing}"
