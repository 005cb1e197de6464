"""The benchmark's figures: per-round lines while it runs, then summary tables and the targets of
issue 14 as JSON (``latest.json``) and Markdown (``latest.md``). ``python -m bench.report
[latest.json]`` prints the compact tables of the README's Performance section."""

from __future__ import annotations

from typing import Any

ROUND_HEADER = (
    "| round | DB | C | TTFT p50 ms | TTFT p99 ms | gap p50 ms | gap p99 ms | reply p50 s "
    "| CPU µs/delta | CPU ms/reply | RSS KB/reply | stmts/reply | conns/reply | errors | s |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: | ---: |"
)


def num(value: Any, digits: int | None = None) -> str:
    """A figure for a table: '–' when missing; fewer decimals for larger numbers."""
    if value is None:
        return "–"
    if isinstance(value, int) and digits is None:
        return str(value)
    value = float(value)
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1
    return f"{value:.{digits}f}"


def secs(ms: Any) -> str:
    return "–" if ms is None else f"{ms / 1000:.2f}"


def q(row: dict[str, Any] | None, metric: str, p: str) -> Any:
    if not row or metric not in row:
        return None
    return row[metric].get(p)


def name_of(row: dict[str, Any]) -> str:
    if row["variant"] == "streamchat" and row["front"] != "ws":
        return f"streamchat {row['front']}"
    return row["variant"]


def errors_cell(row: dict[str, Any] | None) -> str:
    if not row:
        return "–"
    return f"{row['errors']} (+{row['cut_replies']} cut)" if row.get("cut") else str(row["errors"])


def round_line(row: dict[str, Any]) -> str:
    if row.get("skipped"):
        return f"| {name_of(row)} | {row['db'] or '–'} | {row['c']} | skipped: {row['skipped']} |"
    if row.get("failed"):
        return (
            f"| {name_of(row)} | {row['db'] or '–'} | {row['c']} | failed: "
            f"{row['failed'].splitlines()[0][:80]} |"
        )
    cells = [
        name_of(row),
        row["db"] or "–",
        str(row["c"]),
        num(q(row, "ttft_ms", "p50")),
        num(q(row, "ttft_ms", "p99")),
        num(q(row, "gap_ms", "p50")),
        num(q(row, "gap_ms", "p99")),
        secs(q(row, "duration_ms", "p50")),
        num(row.get("cpu_us_per_delta")),
        num(row.get("cpu_ms_per_reply")),
        num(row.get("rss_kb_per_reply")),
        num(row.get("statements_per_reply")),
        num(row.get("connections_per_reply")),
        errors_cell(row),
        num(row.get("wall_s")),
    ]
    return "| " + " | ".join(cells) + " |"


# -- summary -----------------------------------------------------------------------------------


def find(rows: list[dict[str, Any]], variant: str, c: int, db: str | None = None,
         front: str = "ws") -> dict[str, Any] | None:  # fmt: skip
    for row in rows:
        if (
            row["variant"] == variant
            and row["c"] == c
            and (db is None or row["db"] == db)
            and (variant == "direct" or row["front"] == front)
            and not row.get("failed")
            and not row.get("skipped")
        ):
            return row
    return None


def diff(a: Any, b: Any, digits: int = 2) -> float | None:
    return None if a is None or b is None else round(a - b, digits)


def ratio(a: Any, b: Any) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def summarize(
    rows: list[dict[str, Any]], c: int, db: str, front: str = "ws"
) -> dict[str, Any] | None:
    sc = find(rows, "streamchat", c, db, front)
    if sc is None:
        return None
    direct = find(rows, "direct", c)
    bare = find(rows, "bare", c)
    return {
        "c": c,
        "db": db,
        "front": front,
        "ttft_p50_ms": {k: q(r, "ttft_ms", "p50") for k, r in
                        (("direct", direct), ("bare", bare), ("streamchat", sc))},
        "ttft_p99_ms": {k: q(r, "ttft_ms", "p99") for k, r in
                        (("direct", direct), ("bare", bare), ("streamchat", sc))},
        "added_ttft_p50_ms": diff(q(sc, "ttft_ms", "p50"), q(direct, "ttft_ms", "p50")),
        "added_ttft_p99_ms": diff(q(sc, "ttft_ms", "p99"), q(direct, "ttft_ms", "p99")),
        "gap_ms": {"bare": bare and bare["gap_ms"], "streamchat": sc["gap_ms"]},
        "duration_p50_ms": {"bare": q(bare, "duration_ms", "p50"),
                            "streamchat": q(sc, "duration_ms", "p50")},
        "duration_p99_ms": {"bare": q(bare, "duration_ms", "p99"),
                            "streamchat": q(sc, "duration_ms", "p99")},
        "cpu_us_per_delta": {"bare": bare and bare.get("cpu_us_per_delta"),
                             "streamchat": sc.get("cpu_us_per_delta")},
        "cpu_ratio": ratio(sc.get("cpu_us_per_delta"), bare and bare.get("cpu_us_per_delta")),
        "cpu_ms_per_reply": {"bare": bare and bare.get("cpu_ms_per_reply"),
                             "streamchat": sc.get("cpu_ms_per_reply")},
        "cpu_ms_beyond_relaying": diff(sc.get("cpu_ms_per_reply"),
                                       bare and bare.get("cpu_ms_per_reply")),
        "rss_kb_per_reply": {"bare": bare and bare.get("rss_kb_per_reply"),
                             "streamchat": sc.get("rss_kb_per_reply")},
        "statements_per_reply": sc.get("statements_per_reply"),
        "connections_per_reply": sc.get("connections_per_reply"),
        "errors": {"direct": direct and direct["errors"], "bare": bare and bare["errors"],
                   "streamchat": sc["errors"]},
        "cut": {"direct": bool(direct and direct.get("cut")),
                "bare": bool(bare and bare.get("cut")), "streamchat": bool(sc.get("cut"))},
        "errors_cell": " / ".join(errors_cell(r) for r in (direct, bare, sc)),
    }  # fmt: skip


def find_probe(rows: list[dict[str, Any]], variant: str, db: str | None) -> dict[str, Any] | None:
    for row in rows:
        ok = not row.get("failed") and not row.get("skipped")
        if ok and row["variant"] == variant and (variant == "probe-bare" or row["db"] == db):
            return row
    return None


def probe_beyond(rows: list[dict[str, Any]], db: str | None) -> float | None:
    """streamchat's CPU per short reply minus the bare relay's: the fixed cost of a reply
    (admission, rows, final write, usage) beyond relaying its few deltas."""
    sc = find_probe(rows, "probe-streamchat", db)
    bare = find_probe(rows, "probe-bare", None)
    return diff(sc and sc.get("cpu_ms_per_reply"), bare and bare.get("cpu_ms_per_reply"))


# -- targets -----------------------------------------------------------------------------------


def targets(meta: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    nominal = meta["nominal_ms"]

    def add(target: str, db: str | None, measured: str, held: bool | None) -> None:
        out.append({"target": target, "db": db, "measured": measured, "held": held})

    for db in meta["dbs"]:
        s1 = summarize(rows, 1, db)
        v = s1 and s1["added_ttft_p50_ms"]
        add("relay-added TTFT p50 ≤ 5 ms at C = 1", db, f"{num(v)} ms",
            None if v is None else v <= 5)  # fmt: skip
        s50 = summarize(rows, 50, db)
        p50, p99 = (s50["added_ttft_p50_ms"], s50["added_ttft_p99_ms"]) if s50 else (None, None)
        add("relay-added TTFT ≤ 25 ms p50 and ≤ 100 ms p99 at C = 50", db,
            f"{num(p50)} / {num(p99)} ms",
            None if p50 is None or p99 is None else p50 <= 25 and p99 <= 100)  # fmt: skip
        s100 = summarize(rows, 100, db)
        sc_t = s100 and s100["ttft_p50_ms"]["streamchat"]
        bare_t = s100 and s100["ttft_p50_ms"]["bare"]
        add("TTFT p50 at C = 100 no worse than the bare relay's", db,
            f"{num(sc_t)} vs {num(bare_t)} ms",
            None if sc_t is None or bare_t is None else sc_t <= bare_t)  # fmt: skip
        r = s100 and s100["cpu_ratio"]
        add(
            "worker CPU per upstream delta at C = 100 ≤ 0.4× the bare relay's",
            db,
            f"{num(r, 2)}×" if r is not None else "–",
            None if r is None else r <= 0.4,
        )
        beyond = s100 and s100["cpu_ms_beyond_relaying"]
        fixed = probe_beyond(rows, db)
        add("CPU per reply beyond relaying < 5 ms (probe: streamchat − bare relay per reply)", db,
            f"{num(fixed)} ms (at C = 100: {num(beyond)} ms)",
            None if fixed is None else fixed < 5)  # fmt: skip
        if db == "postgres":
            d = s100 and s100["duration_p50_ms"]["streamchat"]
            add("replies at C = 100 finish within 10 % of nominal (p50)", db,
                f"{secs(d)} s vs {secs(nominal)} s",
                None if d is None else d <= 1.1 * nominal)  # fmt: skip
        s1000 = find(rows, "streamchat", 1000, db)
        failed = any(
            r.get("failed") for r in rows
            if r["variant"] == "streamchat" and r["c"] == 1000 and r["db"] == db
        )  # fmt: skip
        if s1000 and s1000.get("cut"):
            add("C = 1000 completes with zero errors", db,
                f"{s1000['errors']} errors, {s1000['cut_replies']} replies cut by the time budget",
                False if s1000["errors"] else None)  # fmt: skip
            add("C = 1000: ≤ 150 KB RSS per active reply", db,
                f"{num(s1000.get('rss_kb_per_reply'))} KB (cut round)", None)  # fmt: skip
        elif s1000 or failed:
            errors = s1000["errors"] if s1000 else None
            add(
                "C = 1000 completes with zero errors",
                db,
                "round failed" if failed else f"{errors} errors",
                False if failed else errors == 0,
            )
            rss = s1000 and s1000.get("rss_kb_per_reply")
            add("C = 1000: ≤ 150 KB RSS per active reply", db, f"{num(rss)} KB",
                None if rss is None else rss <= 150)  # fmt: skip
        else:
            add("C = 1000 completes with zero errors and ≤ 150 KB RSS per reply", db, "–", None)
        probe = find_probe(rows, "probe-streamchat", db)
        stmts = probe and probe.get("statements_per_reply")
        add("≤ ~5 statements per reply besides checkpoints (probe: 5-token replies)", db,
            f"{num(stmts)}", None if stmts is None else stmts <= 5.5)  # fmt: skip
        conns = s100 and s100["connections_per_reply"]
        add("no connection opened per trip (≤ 1 connection per reply, C = 100)", db,
            f"{num(conns)}", None if conns is None else conns <= 1)  # fmt: skip
    add("beyond capacity: an `overloaded` error and accepted replies keep pace", None,
        "not measured", None)  # fmt: skip
    return out


def build(meta: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = [
        s
        for c in meta["concurrency"]
        for db in meta["dbs"]
        if (s := summarize(rows, c, db)) is not None
    ]
    if meta["http_concurrency"]:
        for db in meta["http_dbs"]:
            for front in ("sse", "openai"):
                s = summarize(rows, meta["http_concurrency"], db, front)
                if s is not None:
                    summary.append(s)
    return {"meta": meta, "summary": summary, "targets": targets(meta, rows), "rounds": rows}


# -- Markdown ----------------------------------------------------------------------------------


def pair(a: Any, b: Any, sep: str = " / ") -> str:
    return f"{num(a)}{sep}{num(b)}"


def triple(d: dict[str, Any]) -> str:
    return f"{num(d['direct'])} / {num(d['bare'])} / {num(d['streamchat'])}"


def summary_table(summary: list[dict[str, Any]], nominal_ms: float) -> list[str]:
    lines = [
        "| C | DB | TTFT p50 ms direct / bare / streamchat "
        "| TTFT p99 ms direct / bare / streamchat "
        "| added TTFT p50 / p99 ms | gap p50 / p99 ms bare · streamchat "
        f"| reply p50 s bare / streamchat (nominal {nominal_ms / 1000:.2f}) "
        "| CPU µs/delta bare / streamchat (ratio) | CPU ms/reply bare / streamchat (beyond) "
        "| RSS KB/reply bare / streamchat | stmts / conns per reply "
        "| errors direct / bare / streamchat |",
        "| ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        gb, gs = s["gap_ms"]["bare"] or {}, s["gap_ms"]["streamchat"] or {}
        db = s["db"] if s["front"] == "ws" else f"{s['db']}, {s['front']}"
        cells = [
            str(s["c"]),
            db,
            triple(s["ttft_p50_ms"]),
            triple(s["ttft_p99_ms"]),
            pair(s["added_ttft_p50_ms"], s["added_ttft_p99_ms"]),
            f"{pair(gb.get('p50'), gb.get('p99'))} · {pair(gs.get('p50'), gs.get('p99'))}",
            f"{secs(s['duration_p50_ms']['bare'])} / {secs(s['duration_p50_ms']['streamchat'])}",
            f"{pair(s['cpu_us_per_delta']['bare'], s['cpu_us_per_delta']['streamchat'])}"
            f" ({num(s['cpu_ratio'], 2)}×)",
            f"{pair(s['cpu_ms_per_reply']['bare'], s['cpu_ms_per_reply']['streamchat'])}"
            f" ({num(s['cpu_ms_beyond_relaying'])})",
            pair(s["rss_kb_per_reply"]["bare"], s["rss_kb_per_reply"]["streamchat"]),
            pair(s["statements_per_reply"], s["connections_per_reply"]),
            s["errors_cell"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def probe_table(rows: list[dict[str, Any]]) -> list[str]:
    probes = [r for r in rows if r["variant"].startswith("probe-") and not r.get("failed")]
    if not probes:
        return []
    lines = [
        "| variant | DB | replies × tokens | TTFT p50 ms | CPU ms/reply | beyond the bare relay "
        "| statements/reply | connections/reply | statements by kind, per reply |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in probes:
        kinds = ", ".join(f"{k} {v:g}" for k, v in (r.get("statements_by_kind") or {}).items())
        lines.append(
            f"| {r['variant'][6:]} | {r['db'] or '–'} | {r['c']} × {r['tokens']} "
            f"| {num(q(r, 'ttft_ms', 'p50'))} | {num(r.get('cpu_ms_per_reply'))} "
            f"| {num(probe_beyond(rows, r['db']) if r['db'] else None)} "
            f"| {num(r.get('statements_per_reply'))} | {num(r.get('connections_per_reply'))} "
            f"| {kinds or '–'} |"
        )
    return lines


def targets_table(items: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | DB | measured | held |", "| --- | --- | --- | --- |"]
    for t in items:
        held = {True: "held", False: "**not held**", None: "not measured"}[t["held"]]
        lines.append(f"| {t['target']} | {t['db'] or '–'} | {t['measured']} | {held} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    rows = results["rounds"]
    pinned = (
        f"server pinned to core {meta['server_core']}, upstream and load client on core "
        f"{meta['client_core']}"
        if meta["pinned"]
        else "not pinned (fewer than two usable cores)"
    )
    lines = [
        f"# Benchmark{' (quick)' if meta['quick'] else ''}: {meta['started']}, "
        f"commit {meta['commit']}, {meta['duration_s']:.0f} s",
        "",
        f"One Daphne worker per round ({pinned}; {meta['cpus']} CPUs, Python {meta['python']}). "
        f"{meta['tokens']}-token replies at {meta['rate']:g} tokens/s "
        f"(nominal {meta['nominal_ms'] / 1000:.2f} s), C users each sending one message, sends "
        "spread over 1 s. How it is measured: docs/benchmark.md.",
        "",
        "## Websocket" + (" and the HTTP front ends" if meta["http_concurrency"] else ""),
        "",
        *summary_table(results["summary"], meta["nominal_ms"]),
        "",
    ]
    probe = probe_table(rows)
    if probe:
        lines += [
            "## Fixed cost per reply (probe: one reply at a time, too short for a checkpoint)",
            "",
            *probe,
            "",
        ]
    lines += ["## Targets (issue 14)", "", *targets_table(results["targets"]), ""]
    failed = [r for r in rows if r.get("failed")]
    errors = [
        r
        for r in rows
        if not r.get("failed")
        and not r.get("skipped")
        and (r["errors"] or r["warmup_errors"] or r.get("cut"))
    ]
    skipped = [r for r in rows if r.get("skipped")]
    if failed or errors or skipped:
        lines += ["## Problems", ""]
        for r in failed:
            lines.append(f"- {name_of(r)} {r['db'] or ''} C={r['c']}: failed: "
                         f"{r['failed'].splitlines()[0][:200]}")  # fmt: skip
        for r in errors:
            cut = f", {r['cut_replies']} replies cut by the time budget" if r.get("cut") else ""
            lines.append(
                f"- {name_of(r)} {r['db'] or ''} C={r['c']}: {r['errors']} errors "
                f"{r['error_samples']}{cut}; warm-up errors: {r['warmup_errors']}"
            )
        for r in skipped:
            lines.append(f"- {name_of(r)} {r['db'] or ''} C={r['c']}: skipped ({r['skipped']})")
        lines.append("")
    if meta["skipped"]:
        lines += [f"Skipped: {', '.join(meta['skipped'])}.", ""]
    lines += ["## Every round", "", ROUND_HEADER, *(round_line(r) for r in rows), ""]
    return "\n".join(lines)


# -- the README's block ------------------------------------------------------------------------


def readme_block(results: dict[str, Any]) -> str:
    """The compact tables the README's Performance section shows: ``python -m bench.report``."""
    meta = results["meta"]
    lines = [
        f"Last full run: {meta['started'][:10]}, commit {meta['commit']}, "
        f"{meta['duration_s']:.0f} s; {meta['tokens']}-token replies at {meta['rate']:g} tokens/s.",
        "",
        "| C | DB | TTFT p50 ms direct / bare / streamchat | streamchat − direct p50 / p99 ms "
        "| CPU µs/delta bare / streamchat | stmts / conns per reply | streamchat errors |",
        "| ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for s in results["summary"]:
        db = s["db"] if s["front"] == "ws" else f"{s['db']}, {s['front']}"
        cpu = s["cpu_us_per_delta"]
        lines.append(
            f"| {s['c']} | {db} | {triple(s['ttft_p50_ms'])} "
            f"| {pair(s['added_ttft_p50_ms'], s['added_ttft_p99_ms'])} "
            f"| {pair(cpu['bare'], cpu['streamchat'])} ({num(s['cpu_ratio'], 2)}×) "
            f"| {pair(s['statements_per_reply'], s['connections_per_reply'])} "
            f"| {s['errors_cell'].split(' / ')[-1]} |"
        )
    dbs = meta["dbs"]
    lines += [
        "",
        "| target (issue 14) | " + " | ".join(dbs) + " |",
        "| --- |" + " --- |" * len(dbs),
    ]
    seen: dict[str, dict[str | None, str]] = {}
    for t in results["targets"]:
        mark = {True: "held", False: "**not held**", None: "not measured"}[t["held"]]
        measured = any(ch.isdigit() for ch in t["measured"])
        cell = f"{t['measured']}: {mark}" if measured else mark
        seen.setdefault(t["target"], {})[t["db"]] = cell
    for target, cells in seen.items():
        row = [cells.get(db, cells.get(None, "–")) for db in dbs]
        lines.append(f"| {target} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    default = Path(__file__).resolve().parent / "results" / "latest.json"
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    print(readme_block(json.loads(path.read_text())), end="")
