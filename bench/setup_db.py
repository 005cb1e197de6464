"""Migrate the bench database and log users in without the login form.

    DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=... \
        python -m bench.setup_db --out users.json --group ws-c100:102 --group openai-c100:102:token

Each ``--group NAME:COUNT[:token]`` makes COUNT users (no usable password: nothing to hash) and a
database session for each (``SESSION_KEY``, ``BACKEND_SESSION_KEY``, ``HASH_SESSION_KEY``), and
with ``:token`` a personal API token (``streamchat.tokens.create_token``). Writes
``{"groups": {NAME: [{"user": id, "session": key, "token": "sc-..." or null}, ...]}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--group", action="append", default=[])
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from streamchat.tokens import create_token

    call_command("migrate", interactive=False, verbosity=0)
    User = get_user_model()
    backend = "django.contrib.auth.backends.ModelBackend"
    expires = timezone.now() + timedelta(days=1)
    store = SessionStore()
    out: dict[str, list[dict[str, object]]] = {}
    for spec in args.group:
        name, count, *flags = spec.split(":")
        password = make_password(None)  # unusable, so no hashing per user
        users = User.objects.bulk_create(
            [User(username=f"{name}-{i}", password=password) for i in range(int(count))]
        )
        if not all(user.pk for user in users):  # backends that return no ids
            users = list(User.objects.filter(username__startswith=f"{name}-").order_by("pk"))
        sessions = []
        rows = []
        for user in users:
            key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
            data = {
                SESSION_KEY: str(user.pk),
                BACKEND_SESSION_KEY: backend,
                HASH_SESSION_KEY: user.get_session_auth_hash(),
            }
            sessions.append(
                Session(session_key=key, session_data=store.encode(data), expire_date=expires)
            )
            token = create_token(user, "bench")[1] if "token" in flags else None
            rows.append({"user": user.pk, "session": key, "token": token})
        Session.objects.bulk_create(sessions)
        out[name] = rows
    Path(args.out).write_text(json.dumps({"groups": out}))


if __name__ == "__main__":
    main()
