"""docs/security.md stays honest: every test it names exists, every case id has a websocket-side
test whose name carries the id, every case that depends on the entry point has an HTTP test whose
name carries it too (no row is left to do), and every streamchat check id is in its deploy
checklist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from streamchat import checks

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "security.md").read_text()
CASE_IDS = [
    *(f"WS-{n:02d}" for n in (1, 9, 10, 11, 12, 14, 18, 20, 22, 25)),
    *(f"SEC-{n:02d}" for n in (1, 2, 4, 5, 7)),
    *(f"RL-{n:02d}" for n in (1, 2, 3, 4, 10, 11)),
    *(f"ST-{n:02d}" for n in (1, 2, 5, 8, 9, 10, 11, 15)),
    "XSS-18",
]
# Cases whose behaviour depends on the entry point, proven again through SSE, the JSON API and the
# OpenAI-compatible API (the others are the same engine, limits or admin for every entry point, or
# have an HTTP test from the HTTP front ends' own suite).
HTTP_CASE_IDS = [
    *(f"WS-{n:02d}" for n in (10, 18, 20)),
    "SEC-07",
    *(f"RL-{n:02d}" for n in (1, 2, 11)),
    *(f"ST-{n:02d}" for n in (5, 8, 9, 10, 11, 15)),
]

pytestmark = pytest.mark.once


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def table_rows() -> dict[str, str]:
    """The case table: id -> the rest of its row."""
    rows = {}
    for line in DOC.splitlines():
        match = re.match(r"^\| ((?:WS|SEC|RL|ST|XSS)-[\d, ]+|CHK) \|(.*)$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def http_cells() -> dict[str, str]:
    """The case table's last column ("HTTP"): id -> its cell."""
    return {
        case: rest.rstrip(" |").rsplit("|", 1)[1].strip() for case, rest in table_rows().items()
    }


def test_every_test_the_doc_names_exists():
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", DOC)
    assert len(named) > 40
    missing = [f"{f}::{t}" for f, t in named if t not in defined_tests(ROOT / f)]
    assert not missing, missing


def test_every_case_has_a_row_with_a_test_carrying_its_id():
    rows = table_rows()
    for case in CASE_IDS:
        assert case in rows, f"{case} has no row in docs/security.md"
        slug = case.replace("-", "").lower()  # WS-09 -> ws09
        assert re.search(rf"::test_(\w+_)?{slug}_", rows[case]), f"no test named for {case}"


def test_no_case_is_left_to_do_and_every_http_cell_names_tests_or_says_why_not():
    for case, cell in http_cells().items():
        assert "TODO" not in cell, f"{case}: {cell}"
        assert cell == "–" or cell.startswith("n/a") or "::test_" in cell, f"{case}: {cell!r}"


def test_every_case_that_depends_on_the_entry_point_has_an_http_test_carrying_its_id():
    cells = http_cells()
    for case in HTTP_CASE_IDS:
        slug = case.replace("-", "").lower()
        assert re.search(rf"::test_(\w+_)?{slug}_", cells[case]), f"no HTTP test named for {case}"


def test_every_check_id_is_in_the_deploy_checklist():
    source = Path(checks.__file__).read_text()
    for check_id in set(re.findall(r"streamchat\.[EW]\d{3}", source)):
        assert f"`{check_id}`" in DOC, f"{check_id} is missing from docs/security.md"
