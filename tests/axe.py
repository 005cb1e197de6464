"""axe-core in a Playwright page: ``audit(page)`` returns the serious and critical violations.

axe-core is vendored under tests/vendor/axe-core/ (``npm pack axe-core``: its ``axe.min.js`` and
licence files) and used by the tests only; the app never serves it. It is evaluated through the
DevTools protocol (``page.evaluate``), which the page's Content-Security-Policy does not govern, so
the audited page keeps its real policy: a ``<script>`` tag would be refused by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"

# What the audit fails on: axe's two highest impacts.
FAILING = ("serious", "critical")


def audit(
    page: Any,
    *,
    exclude: dict[str, tuple[str, str]] | None = None,
    context: str = "document",
) -> list[dict[str, Any]]:
    """Run axe's WCAG 2.x A/AA and best-practice rules on ``context`` (a CSS selector or the
    whole document); return the violations of serious or critical impact, each reduced to its
    rule id, impact, help text and the first few offending nodes (selector and summary).

    ``exclude`` maps a rule id to ``(where, why)``: the rule's findings inside elements matching
    the selector ``where`` (``"*"``: anywhere) are dropped, and ``why`` must say why. Scoped, so
    an exclusion for markup a page cannot change never hides the same fault in its own markup.
    """
    exclude = exclude or {}
    assert all(why.strip() for _, why in exclude.values()), "say why a rule is excluded"
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    results = page.evaluate(
        """async ([context, exclude]) => {
            const target = context === "document" ? document : document.querySelector(context);
            const found = await window.axe.run(target, {
                runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa",
                                                  "wcag22aa", "best-practice"] },
                resultTypes: ["violations"],
                elementRef: true,
            });
            return found.violations.map(v => {
                const where = exclude[v.id];
                const nodes = v.nodes.filter(
                    n => !(where && n.element && n.element.closest(where)));
                return {
                    id: v.id, impact: v.impact, help: v.help, count: nodes.length,
                    nodes: nodes.slice(0, 5).map(n => ({
                        target: n.target.join(" "), summary: n.failureSummary,
                    })),
                };
            }).filter(v => v.count > 0);
        }""",
        [context, {rule: where for rule, (where, _) in exclude.items()}],
    )
    return [v for v in results if v["impact"] in FAILING]


def describe(violations: list[dict[str, Any]]) -> str:
    """The violations as lines a failing assertion can show."""
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"]:
            summary = " ".join(str(node["summary"]).split())
            lines.append(f"    {node['target']}: {summary}")
    return "\n".join(lines)
