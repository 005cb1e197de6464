"""The chat page's ES modules (static/streamchat/chat/) keep the shape that hashed static files
need: ManifestStaticFilesStorage (with support_js_module_import_aggregation, as
streamchat.storage's) rewrites ``import … from "./x.js";`` to hashed names only for relative paths
ending in ``;``, and hashes a file after the files it imports, which an import cycle makes
impossible ("Max post-process passes exceeded" at collectstatic). The drop-in test runs the real
collectstatic; this one says which import is at fault, in milliseconds."""

from __future__ import annotations

import re
from pathlib import Path

CHAT = Path(__file__).resolve().parent.parent / "streamchat" / "static" / "streamchat" / "chat"
IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']\s*(;?)""", re.M | re.S
)


def imports() -> dict[str, list[str]]:
    graph = {}
    for path in sorted(CHAT.glob("*.js")):
        source = path.read_text()
        names = []
        for match in IMPORT.finditer(source):
            name, semicolon = match.groups()
            assert name.startswith("./") and name.endswith(".js"), f"{path.name}: {name}"
            assert semicolon, f"{path.name}: the import of {name} must end with ';'"
            assert (CHAT / name[2:]).is_file(), f"{path.name} imports a missing {name}"
            names.append(name[2:])
        graph[path.name] = names
    return graph


def test_the_chat_modules_import_each_other_without_a_cycle() -> None:
    graph = imports()
    assert "main.js" in graph and len(graph) > 5
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, "import cycle: " + " → ".join([*path, name])
        if name in done:
            return
        for imported in graph[name]:
            visit(imported, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])
    # Every module is reached from main.js, the one the page loads.
    reached: set[str] = set()
    stack = ["main.js"]
    while stack:
        name = stack.pop()
        if name not in reached:
            reached.add(name)
            stack.extend(graph[name])
    assert reached == set(graph), set(graph) - reached
