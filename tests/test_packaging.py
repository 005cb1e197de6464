"""The built wheel carries the whole app: code, migrations, templates and static files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.dropin.host import build_wheel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    return zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("dist")))


@pytest.mark.once
def test_wheel_contains_the_app_and_nothing_of_the_demo(wheel):
    names = set(wheel.namelist())
    source = {
        f"streamchat/{p.relative_to(ROOT / 'streamchat')}".replace("\\", "/")
        for p in (ROOT / "streamchat").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    missing = source - names
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    assert "streamchat/py.typed" in names
    assert any(n.startswith("streamchat/migrations/0001") for n in names)
    assert not any(n.startswith(("orchat_site/", "tests/")) for n in names)
