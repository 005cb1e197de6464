"""A brand-new Django site in a temporary folder, with streamchat added the README's way.

``Toolchain`` is a clean virtualenv holding the built wheel of django-streamchat (never the source
tree), installed with README's own ``pip install`` line. ``HostSite`` is a ``django-admin
startproject`` site, left as new or first given what an existing site already has (a base
template, a login page, DEBUG off, optionally its own user model), then README's blocks, then
README's commands. ``Server`` runs it under runserver, Daphne or uvicorn, exactly as README's
command line says, on a free port.

Host processes get a clean environment: nothing of the test suite's settings, database or virtualenv
leaks into them; streamchat finds OpenRouter (the simulator) through ``OPENROUTER_BASE_URL`` and
``OPENROUTER_API_KEY``, which README's settings block reads.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from tests.dropin.readme import PROJECT_PLACEHOLDER, Section
from tests.servers import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "django-streamchat"
# README's base URL for the simulator (its default port), to try streamchat offline.
SIMULATOR_URL = "http://127.0.0.1:8765/api/v1"
# The account README's createsuperuser makes (the answers it would be typed).
ADMIN = {"username": "admin", "email": "admin@example.com", "password": "drop-in-admin-7319"}
# Variables of the test run that must not reach a host process.
LEAKY = ("DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONPATH", "DATABASE_URL", "REDIS_URL")


def clean_env(bin_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in LEAKY and not name.startswith(("STREAMCHAT", "OPENROUTER", "PYTEST"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode:
        raise AssertionError(
            f"{shlex.join(args)} exited {result.returncode} in {cwd}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result.stdout + result.stderr


def build_wheel(out: Path) -> Path:
    """The wheel of django-streamchat, built from this repository as a release would be."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("django_streamchat-*.whl")
    return wheel


@dataclass
class Toolchain:
    """A fresh virtualenv (no system site-packages) with django-streamchat from ``wheel``."""

    path: Path
    log: str = ""

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return clean_env(self.bin, extra)

    @classmethod
    def create(
        cls, path: Path, *, readme: Section, wheel: Path, extras: list[str], also: list[str]
    ) -> Toolchain:
        """README's ``pip install`` lines in one go, with the wheel in place of the package name
        and ``extras`` added to its extras, plus ``also`` (version pins)."""
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
        toolchain = cls(path)
        requirements = []
        for line in readme.command_lines("pip"):
            words = shlex.split(line)
            assert words[:2] == ["pip", "install"], line
            for word in words[2:]:
                name, _, rest = word.partition("[")
                if name == PACKAGE:
                    listed = [e for e in rest.rstrip("]").split(",") if e]
                    word = f"{wheel}[{','.join(listed + extras)}]"
                requirements.append(word)
        assert str(wheel) in " ".join(requirements), f"README's pip lines install no {PACKAGE}"
        # --no-compile: modules are compiled when first imported, which is fewer of them.
        toolchain.log = run(
            [toolchain.python, "-m", "pip", "install", "-q", "--no-compile", *requirements, *also],
            cwd=path,
            env=toolchain.env(),
            timeout=600,
        )
        return toolchain

    def module_file(self, module: str) -> str:
        return run(
            [self.python, "-c", f"import {module}; print({module}.__file__)"],
            cwd=self.path,
            env=self.env(),
        ).strip()

    def version(self, distribution: str) -> str:
        return run(
            [
                self.python,
                "-c",
                f"from importlib.metadata import version; print(version({distribution!r}))",
            ],
            cwd=self.path,
            env=self.env(),
        ).strip()


BASE_TEMPLATE = """\
{% load static %}<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{% block title %}Host site{% endblock %}</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{% static 'host/site.css' %}">
  {% block extra_head %}{% endblock %}
</head>
<body>
  <header id="host-header">
    Host site{% if user.is_authenticated %}: {{ user.get_username }}{% endif %}
  </header>
  <main id="host-main">{% block content %}{% endblock %}</main>
</body>
</html>
"""

LOGIN_TEMPLATE = """\
{% extends "base.html" %}
{% block content %}
<form method="post" id="host-login">
  {% csrf_token %}{{ form.as_p }}<button type="submit">Log in</button>
</form>
{% endblock %}
"""

SITE_CSS = """\
body { margin: 0; }
#host-header { height: 3rem; background: rgb(1, 2, 3); color: #fff; }
#host-main .sc-app { height: calc(100dvh - 3rem); }
"""

# A user model of the host's own: a UUID primary key, the email address as the login name.
USER_MODEL = """\
import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS = ["username"]
"""


@dataclass
class HostSite:
    """A new Django project that is an "existing site" first, then gets streamchat README's way."""

    toolchain: Toolchain
    folder: Path  # holds manage.py
    name: str  # the project package
    prefix: str  # where the host mounts streamchat's URLs, e.g. "chat/"
    upstream: str  # the OpenRouter base URL: the test's simulator, in place of README's
    env_extra: dict[str, str] = field(default_factory=dict)
    custom_user: bool = False
    login: str = ""  # the name its user logs in with (create_user)
    api_token: str = ""  # the user's personal token (create_user)

    @property
    def env(self) -> dict[str, str]:
        return self.toolchain.env(self.env_extra)

    def manage(self, *args: str) -> str:
        return run([self.toolchain.python, "manage.py", *args], cwd=self.folder, env=self.env)

    @classmethod
    def create(
        cls,
        toolchain: Toolchain,
        parent: Path,
        *,
        readme: Section,
        upstream: str,
        name: str = "host",
        prefix: str = "chat/",
        existing: bool = True,
        custom_user: bool = False,
        purposes: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> HostSite:
        """``existing``: the site has its own layout, login page and settings before streamchat;
        else it is exactly what startproject made."""
        folder = parent / name
        folder.mkdir(parents=True)
        site = cls(toolchain, folder, name, prefix, upstream, dict(env or {}), custom_user)
        run(
            [str(toolchain.bin / "django-admin"), "startproject", name, str(folder)],
            cwd=parent,
            env=site.env,
        )
        if existing:
            site._become_an_existing_site()
        site.apply(readme, *purposes)
        return site

    # -- what the site had before streamchat -------------------------------------------------

    def _become_an_existing_site(self) -> None:
        templates = self.folder / "templates"
        (templates / "registration").mkdir(parents=True)
        (templates / "base.html").write_text(BASE_TEMPLATE)
        (templates / "registration" / "login.html").write_text(LOGIN_TEMPLATE)
        (self.folder / "static" / "host").mkdir(parents=True)
        (self.folder / "static" / "host" / "site.css").write_text(SITE_CSS)
        settings = textwrap.dedent(
            """
            # --- the host site's own settings, before streamchat ---
            DEBUG = False
            ALLOWED_HOSTS = ["127.0.0.1"]
            TEMPLATES[0]["DIRS"] = [BASE_DIR / "templates"]
            STATICFILES_DIRS = [BASE_DIR / "static"]
            """
        )
        if self.custom_user:
            run(
                [self.toolchain.python, "manage.py", "startapp", "accounts"],
                cwd=self.folder,
                env=self.env,
            )
            (self.folder / "accounts" / "models.py").write_text(USER_MODEL)
            settings += 'INSTALLED_APPS += ["accounts"]\nAUTH_USER_MODEL = "accounts.User"\n'
        self._append(f"{self.name}/settings.py", settings)
        self._append(
            f"{self.name}/urls.py",
            "\nfrom django.urls import include\n\n"
            'urlpatterns += [path("accounts/", include("django.contrib.auth.urls"))]\n',
        )
        if self.custom_user:
            self.manage("makemigrations", "accounts")

    # -- README ------------------------------------------------------------------------------

    def apply(self, readme: Section, *purposes: str, common: bool = True) -> None:
        """README's blocks for every site (unless not ``common``) and for ``purposes``."""
        for block in readme.file_blocks(*purposes, common=common):
            block = block.for_project(self.name)
            code = block.code
            if block.path == f"{self.name}/urls.py":
                # The host's own prefix in place of README's "chat/".
                assert 'path("chat/", include("streamchat.urls"))' in code, code
                code = code.replace('path("chat/"', f'path("{self.prefix}"')
            if SIMULATOR_URL in code:
                # The test's simulator listens on a free port, not on the default one.
                code = code.replace(SIMULATOR_URL, self.upstream)
            if block.mode == "append":
                self._append(block.path, "\n" + code)
            else:
                target = self.folder / block.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(code)

    def _append(self, path: str, code: str) -> None:
        with open(self.folder / path, "a") as f:
            f.write(code)

    def run_readme_commands(
        self, readme: Section, *purposes: str, common: bool = True
    ) -> dict[str, str]:
        """README's ``python manage.py …`` lines of the console blocks for every site (unless
        not ``common``) and for ``purposes``, in order, but ``runserver`` (a ``Server``):
        ``{command: output}``. ``createsuperuser`` runs with ``--noinput``, its answers from the
        environment (``ADMIN``)."""
        outputs = {}
        for block in readme.command_blocks(*purposes, common=common):
            for line in block.lines:
                words = shlex.split(line)
                if words[:2] != ["python", "manage.py"] or words[2] == "runserver":
                    continue
                if words[2] == "createsuperuser":
                    words.append("--noinput")
                    self.env_extra.update(
                        {f"DJANGO_SUPERUSER_{name.upper()}": value for name, value in ADMIN.items()}
                    )
                outputs[words[2]] = self.manage(*words[2:])
        assert outputs, "README runs no manage.py command"
        return outputs

    def create_user(self, password: str) -> None:
        """A plain (not staff) user, ``login`` the name it logs in with, and ``api_token`` a
        personal token of theirs for the OpenAI-compatible API."""
        self.login = "alice@example.com" if self.custom_user else "alice"
        output = self.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model\n"
            "from streamchat.tokens import create_token\n"
            "user = get_user_model().objects.create_user(\n"
            f"    username='alice', email='alice@example.com', password={password!r})\n"
            "print('token', create_token(user, 'drop-in')[1])\n",
        )
        self.api_token = re.findall(r"^token (sc-\S+)$", output, re.M)[-1]


class Server(ServerProcess):
    """README's serve command (``daphne …``, ``uvicorn …`` or ``python manage.py runserver``) on
    a free loopback port."""

    def __init__(self, site: HostSite, command: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        words = shlex.split(command.replace(f"{PROJECT_PLACEHOLDER}.", f"{site.name}."))
        program = self.program = words[0]
        if program == "daphne":
            words += ["-b", "127.0.0.1", "-p", str(self.port)]
        elif program == "uvicorn":
            words += ["--host", "127.0.0.1", "--port", str(self.port)]
        elif words[1:3] == ["manage.py", "runserver"]:
            # No autoreloader: its child process would outlive stop().
            program = self.program = "runserver"
            words = ["python", *words[1:], "--noreload", f"127.0.0.1:{self.port}"]
        else:
            raise AssertionError(f"unknown server {program!r}")
        words[0] = str(site.toolchain.bin / words[0])
        self._start(words, cwd=site.folder, env=site.env, log=log)

    def problems(self) -> list[str]:
        """Log lines of tracebacks, warnings and errors (access log lines aside)."""
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if re.search(
                r"Traceback|Warning:|Exception|\bERROR\b|\bCRITICAL\b|identified some issues", line
            )
        ]
