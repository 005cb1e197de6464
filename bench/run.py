"""The benchmark: streamchat against a bare relay and the upstream itself, in one run.

    python -m bench                      # the whole matrix (make bench), under 10 minutes
    python -m bench --quick              # C = 5, SQLite, 20-token replies (make bench-quick)
    python -m bench --db sqlite --concurrency 1,50 --out /tmp/bench

docs/benchmark.md says what is measured and how. In short: an OpenRouter-shaped upstream with a
fixed schedule (``bench/upstream.py``), the bare relay (``bench/bare_relay.py``) and the demo site
(``bench/settings.py``), each under its own Daphne pinned to one core, are driven by the load client
(``bench/client.py``) on the other core; every round starts a fresh server process, warms it up,
connects C users, lets each send one message (sends spread over 1 s) and reads the worker's CPU,
memory and database counters around the replies.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procs, report
from .client import percentile

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
WARMUP = 2
PROBE_REPLIES = 10
PROBE_TOKENS = 5
# Of the time budget: kept for stopping the last round and writing the results; the least a
# round is started with.
RESERVE_S = 10.0
TARGET_C = (1, 50, 100, 1000)
MIN_ROUND_S = 20.0
PG_NAME = "bench_streamchat"


@dataclass
class Config:
    quick: bool
    dbs: list[str]
    concurrency: list[int]
    http_concurrency: int | None
    http_dbs: list[str]
    tokens: int
    rate: float
    timeout: float
    first_delta_timeout: float
    out: Path
    var: Path
    probe: bool
    budget: float
    started: float = 0.0
    server_core: int | None = None
    client_core: int | None = None
    pg_url: str = ""
    users: dict[str, Path] = field(default_factory=dict)

    @property
    def nominal_ms(self) -> float:
        return self.tokens / self.rate * 1000

    def remaining(self) -> float | None:
        """Seconds left of the time budget for rounds (None: no budget)."""
        if not self.budget:
            return None
        return self.budget - RESERVE_S - (time.monotonic() - self.started)


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="C=5, SQLite, 20-token replies")
    parser.add_argument("--db", help="sqlite,postgres (default: both; --quick: sqlite)")
    parser.add_argument("--concurrency", help="comma-separated C values")
    parser.add_argument(
        "--http-concurrency",
        type=int,
        help="C for the SSE and OpenAI-compatible rounds (default 100, --quick 5; 0: none)",
    )
    parser.add_argument(
        "--http-db", help="databases of the SSE and OpenAI-compatible rounds (default: sqlite)"
    )
    parser.add_argument("--tokens", type=int, help="tokens per reply (default 200, --quick 20)")
    parser.add_argument("--rate", type=float, default=100.0, help="upstream tokens per second")
    parser.add_argument("--timeout", type=float, help="per reply, seconds (default 300)")
    parser.add_argument(
        "--first-delta-timeout", type=float, help="send to first delta, seconds (default 120)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds for the whole run (default 550, --quick 300; 0: none): a round that would "
        "end later is cut there (its unfinished replies reported as cut), later rounds skipped",
    )
    parser.add_argument("--no-probe", action="store_true", help="skip the short-reply probe")
    parser.add_argument(
        "--out", help="where latest.json and latest.md go (bench/results; --quick: its quick/)"
    )
    parser.add_argument(
        "--var", help="databases, logs, raw results; wiped first (bench/var/full or quick)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    dbs = (args.db or ("sqlite" if quick else "sqlite,postgres")).split(",")
    for db in dbs:
        if db not in ("sqlite", "postgres"):
            parser.error(f"unknown database {db!r}")
    default_c = "5" if quick else "1,50,100,200,500,1000"
    concurrency = [int(c) for c in (args.concurrency or default_c).split(",")]
    http_c = args.http_concurrency
    if http_c is None:
        http_c = 5 if quick else 100
    http_dbs = (args.http_db or "sqlite").split(",")
    http_dbs = [db for db in http_dbs if db in dbs] or dbs[:1]
    budget = args.budget if args.budget is not None else (300.0 if quick else 550.0)
    return Config(
        quick=quick,
        dbs=dbs,
        concurrency=concurrency,
        http_concurrency=http_c or None,
        http_dbs=http_dbs,
        tokens=args.tokens or (20 if quick else 200),
        rate=args.rate,
        timeout=args.timeout or (60.0 if quick else 300.0),
        first_delta_timeout=args.first_delta_timeout or (60.0 if quick else 120.0),
        out=Path(args.out or BENCH / "results" / ("quick" if quick else "")),
        var=Path(args.var or BENCH / "var" / ("quick" if quick else "full")),
        probe=not args.no_probe,
        budget=budget,
        pg_url=os.environ.get(
            "BENCH_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
        ),
    )


def get_json(url: str, timeout: float = 10) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        return dict(json.loads(response.read()))


def read_line(process: subprocess.Popen[Any], timeout: float) -> str:
    """The next line the client prints, or '' if none comes within ``timeout`` seconds."""
    ready, _, _ = select.select([process.stdout], [], [], max(0.0, timeout))
    return process.stdout.readline().strip() if ready else ""  # type: ignore[union-attr]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


# -- databases ---------------------------------------------------------------------------------


def database_url(config: Config, db: str) -> str:
    if db == "sqlite":
        return f"sqlite:///{config.var / 'bench.sqlite3'}"
    return config.pg_url


def postgres_reachable(config: Config) -> bool:
    try:
        import psycopg

        admin = config.pg_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, connect_timeout=3):
            return True
    except Exception:
        return False


def fresh_database(config: Config, db: str) -> None:
    if db == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(config.var / "bench.sqlite3") + suffix).unlink(missing_ok=True)
        return
    import psycopg
    from psycopg import sql

    admin = config.pg_url.rsplit("/", 1)[0] + "/postgres"
    name = config.pg_url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_postgres(config: Config) -> None:
    try:
        import psycopg
        from psycopg import sql

        admin = config.pg_url.rsplit("/", 1)[0] + "/postgres"
        name = config.pg_url.rsplit("/", 1)[1]
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    except Exception as error:
        print(f"(could not drop the bench database: {error})")


def groups_for(config: Config, db: str) -> list[str]:
    specs = [f"ws-c{c}:{c + WARMUP}" for c in config.concurrency]
    if config.http_concurrency and db in config.http_dbs:
        c = config.http_concurrency
        specs += [f"sse-c{c}:{c + WARMUP}", f"openai-c{c}:{c + WARMUP}:token"]
    if config.probe:
        specs.append(f"probe:{PROBE_REPLIES + WARMUP}")
    return specs


def prepare_database(config: Config, db: str) -> None:
    started = time.monotonic()
    fresh_database(config, db)
    users = config.var / f"users-{db}.json"
    command = [PY, "-m", "bench.setup_db", "--out", str(users)]
    for spec in groups_for(config, db):
        command += ["--group", spec]
    env = base_env(DJANGO_SETTINGS_MODULE="bench.settings", DATABASE_URL=database_url(config, db))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"setting up {db} failed:\n{done.stdout}\n{done.stderr}")
    config.users[db] = users
    print(
        f"{db}: migrated and {len(groups_for(config, db))} user groups made "
        f"in {time.monotonic() - started:.1f} s",
        flush=True,
    )


# -- servers -----------------------------------------------------------------------------------


class Server:
    """A Daphne serving the bare relay or streamchat (``db``), for one round."""

    def __init__(self, config: Config, kind: str, db: str | None, upstream_url: str, tag: str):
        self.config = config
        self.kind = kind
        self.db = db
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.var / "logs" / f"{tag}.log"
        if kind == "bare":
            app = "bench.bare_relay:application"
            env = base_env(BENCH_UPSTREAM_URL=upstream_url)
        else:
            assert db is not None
            app = "orchat_site.asgi:application"
            env = base_env(
                DJANGO_SETTINGS_MODULE="bench.settings",
                DATABASE_URL=database_url(config, db),
                BENCH_UPSTREAM_URL=upstream_url,
            )
        # -v 0: no access log line per connection, and the root logger at WARNING (the demo's
        # own LOGGING still logs streamchat at INFO, as deployed).
        command = [PY, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(self.port), app]
        self.process = procs.start(
            command, cwd=ROOT, env=env, log=self.log, core=config.server_core
        )
        self.pid = self.process.pid
        procs.wait_listening(self.process, self.port, self.log)

    def db_stats(self) -> dict[str, Any] | None:
        if self.kind != "streamchat":
            return None
        return get_json(f"{self.url}/bench/stats/")

    def stop(self) -> None:
        procs.stop(self.process)


# -- one round ---------------------------------------------------------------------------------


def stats_of(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "min": None, "max": None}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


def per(value: float | None, count: int, digits: int = 3) -> float | None:
    return None if value is None or not count else round(value / count, digits)


def run_round(
    config: Config,
    upstream_url: str,
    *,
    variant: str,
    front: str,
    db: str | None,
    c: int,
    tokens: int,
    server: Server | None,
    group: str | None,
    sequential: bool = False,
) -> dict[str, Any]:
    tag = f"{variant}-{front}-{db or 'nodb'}-c{c}"
    result_path = config.var / f"result-{tag}.json"
    mode = "direct" if variant == "direct" else front
    url = upstream_url if variant == "direct" else server.url  # type: ignore[union-attr]
    command = [
        PY, "-m", "bench.client", "--mode", mode, "--url", url, "--concurrency", str(c),
        "--tokens", str(tokens), "--warmup", str(WARMUP), "--timeout", str(config.timeout),
        "--first-delta-timeout", str(config.first_delta_timeout), "--result", str(result_path),
    ]  # fmt: skip
    if group and db:
        command += ["--users", str(config.users[db]), "--group", group]
    if sequential:
        command.append("--sequential")
    log = config.var / "logs" / f"client-{tag}.log"
    client = procs.start(
        command, cwd=ROOT, env=base_env(), log=log, core=config.client_core, pipes=True
    )
    started = time.monotonic()
    remaining = config.remaining()
    try:
        line = read_line(client, 600 if remaining is None else remaining)
        if line != "READY":
            client.wait(30)
            raise RuntimeError(f"the client did not get ready ({line!r}):\n{procs.tail(log)}")
        upstream_before = get_json(upstream_url.rsplit("/api/v1", 1)[0] + "/bench/stats")
        db_before = server.db_stats() if server else None
        pid = server.pid if server else None
        rss_before = procs.rss_kb(pid) if pid else None
        cpu_before = procs.cpu_seconds(pid) if pid else None
        sampler = procs.RssSampler(pid) if pid else None
        remaining = config.remaining()
        deadline = None if remaining is None else max(5.0, remaining)
        client.stdin.write(f"GO {deadline or ''}\n")  # type: ignore[union-attr]
        client.stdin.flush()  # type: ignore[union-attr]
        longest = config.timeout + 60 if deadline is None else deadline + 30
        line = read_line(client, longest + c / 10)
        if line != "DONE":
            client.wait(30)
            raise RuntimeError(f"the client failed ({line!r}):\n{procs.tail(log)}")
        rss_peak = sampler.stop() if sampler else None
        if pid:
            procs.wait_idle(pid)
        cpu_after = procs.cpu_seconds(pid) if pid else None
        upstream_after = get_json(upstream_url.rsplit("/api/v1", 1)[0] + "/bench/stats")
        db_after = server.db_stats() if server else None
        client.stdin.write("CLOSE\n")  # type: ignore[union-attr]
        client.stdin.flush()  # type: ignore[union-attr]
        client.wait(60)
        if client.returncode != 0:
            raise RuntimeError(f"the client exited with {client.returncode}:\n{procs.tail(log)}")
    finally:
        procs.stop(client)
    result = json.loads(result_path.read_text())
    replies = result["replies"]
    errors = [r["error"] for r in replies if r["error"]]
    deltas = upstream_after["deltas"] - upstream_before["deltas"]
    cpu = None if cpu_before is None else cpu_after - cpu_before  # type: ignore[operator]
    row: dict[str, Any] = {
        "variant": variant,
        "front": front,
        "db": db,
        "c": c,
        "tokens": tokens,
        "sequential": sequential,
        "replies": len(replies),
        "cut": result["cut"],
        "cut_replies": sum(1 for r in replies if r["error"] == "cut"),
        "errors": len([e for e in errors if e != "cut"]),
        "error_samples": sorted({e for e in errors if e != "cut"})[:5],
        "warmup_errors": result["warmup_errors"],
        "ttft_ms": stats_of([r["ttft_ms"] for r in replies if r["ttft_ms"] is not None]),
        "duration_ms": stats_of(
            [r["duration_ms"] for r in replies if r["duration_ms"] is not None and not r["error"]]
        ),
        "gap_ms": {k: result["gaps_ms"][k] for k in ("count", "p50", "p99")},
        "frames_per_reply": per(sum(r["frames"] for r in replies), len(replies), 1),
        "upstream_deltas": deltas,
        "upstream_streams": upstream_after["streams"] - upstream_before["streams"],
        "upstream_aborted": upstream_after["aborted"] - upstream_before["aborted"],
        "cpu_s": None if cpu is None else round(cpu, 4),
        "cpu_us_per_delta": None if cpu is None or not deltas else round(cpu * 1e6 / deltas, 1),
        "cpu_ms_per_reply": None if cpu is None else round(cpu * 1000 / c, 2),
        "rss_before_kb": rss_before,
        "rss_peak_kb": rss_peak,
        "rss_kb_per_reply": None if rss_peak is None else round((rss_peak - rss_before) / c, 1),  # type: ignore[operator]
        "client_run_s": result["run_s"],
        "wall_s": round(time.monotonic() - started, 1),
    }
    if db_before is not None and db_after is not None:
        kinds = {
            kind: round(
                (db_after["by_kind"].get(kind, 0) - db_before["by_kind"].get(kind, 0)) / c, 2
            )
            for kind in db_after["by_kind"]
        }
        row.update(
            statements_per_reply=per(db_after["statements"] - db_before["statements"], c, 2),
            control_statements_per_reply=per(db_after["control"] - db_before["control"], c, 2),
            connections_per_reply=per(db_after["connections"] - db_before["connections"], c, 2),
            written_chars_per_reply=per(
                db_after["written_chars"] - db_before["written_chars"], c, 0
            ),
            statements_by_kind={k: v for k, v in sorted(kinds.items()) if v},
        )
    return row


def round_with_server(
    config: Config,
    upstream_url: str,
    *,
    variant: str,
    front: str,
    db: str | None,
    c: int,
    tokens: int,
    group: str | None,
    sequential: bool = False,
) -> dict[str, Any]:
    tag = f"{variant}-{front}-{db or 'nodb'}-c{c}"
    server = None
    try:
        if variant != "direct":
            kind = "bare" if variant.endswith("bare") else "streamchat"
            server = Server(config, kind, db, upstream_url, tag)
        return run_round(
            config,
            upstream_url,
            variant=variant,
            front=front,
            db=db,
            c=c,
            tokens=tokens,
            server=server,
            group=group,
            sequential=sequential,
        )
    except Exception as error:
        log = server.log if server else None
        detail = procs.tail(log) if log else ""
        print(f"\n!! round {tag} failed: {error}\n{detail[-1500:]}", flush=True)
        return {
            "variant": variant,
            "front": front,
            "db": db,
            "c": c,
            "tokens": tokens,
            "sequential": sequential,
            "failed": str(error)[:2000],
            "replies": 0,
            "errors": c,
        }
    finally:
        if server is not None:
            server.stop()


# -- the run -----------------------------------------------------------------------------------


def plan(config: Config) -> list[dict[str, Any]]:
    """The rounds in order: the C values the targets name first (1, 50, 100 with the HTTP front
    ends, 1000), then the others, so the time budget cuts what no target needs; per C, direct,
    bare, then streamchat on each database."""
    rounds: list[dict[str, Any]] = []
    t = config.tokens
    if config.probe:
        rounds.append(dict(variant="probe-bare", front="ws", db=None, c=PROBE_REPLIES,
                           tokens=PROBE_TOKENS, group=None, sequential=True))  # fmt: skip
        for db in config.dbs:
            rounds.append(dict(variant="probe-streamchat", front="ws", db=db, c=PROBE_REPLIES,
                               tokens=PROBE_TOKENS, group="probe", sequential=True))  # fmt: skip
    http_c = config.http_concurrency

    def http_rounds() -> None:
        for db in config.http_dbs:
            for front in ("sse", "openai"):
                rounds.append(dict(variant="streamchat", front=front, db=db, c=http_c, tokens=t,
                                   group=f"{front}-c{http_c}"))  # fmt: skip

    ordered = [c for c in TARGET_C if c in config.concurrency]
    ordered += [c for c in config.concurrency if c not in TARGET_C]
    for c in ordered:
        rounds.append(dict(variant="direct", front="http", db=None, c=c, tokens=t, group=None))
        rounds.append(dict(variant="bare", front="ws", db=None, c=c, tokens=t, group=None))
        for db in config.dbs:
            rounds.append(
                dict(variant="streamchat", front="ws", db=db, c=c, tokens=t, group=f"ws-c{c}")
            )
        if http_c and c == http_c:
            http_rounds()  # before the largest rounds, which the time budget may cut
    if http_c and http_c not in config.concurrency:
        http_rounds()
    return rounds


def git_commit() -> str | None:
    """The commit measured (``+dirty``: with uncommitted changes to the app); ``BENCH_COMMIT``
    names it for a run from an exported tree."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "streamchat", "orchat_site"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return None
        return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:
        print("\ninterrupted: every process the benchmark started is stopped", flush=True)
        return 130


def run(config: Config) -> int:
    procs.install_signal_handlers()
    procs.raise_file_limit()
    config.server_core, config.client_core = procs.cores()
    procs.pin(config.client_core)  # this process samples /proc: keep it off the server's core
    if config.var.exists():
        shutil.rmtree(config.var)
    (config.var / "logs").mkdir(parents=True)
    config.out.mkdir(parents=True, exist_ok=True)
    started = config.started = time.monotonic()
    began = datetime.datetime.now(datetime.UTC)
    skipped: list[str] = []
    if "postgres" in config.dbs and not postgres_reachable(config):
        print("PostgreSQL is not reachable on 127.0.0.1:5432: its rounds are skipped.")
        config.dbs.remove("postgres")
        config.http_dbs = [db for db in config.http_dbs if db in config.dbs] or config.dbs[:1]
        skipped.append("postgres (not reachable)")
    if not config.dbs:
        print("No database left to run streamchat on.")
        return 1
    rows: list[dict[str, Any]] = []
    upstream = None
    try:
        port = procs.free_port()
        log = config.var / "logs" / "upstream.log"
        upstream = procs.start(
            [PY, "-m", "bench.upstream", "--port", str(port), "--tokens", str(config.tokens),
             "--rate", str(config.rate)],
            cwd=ROOT, env=base_env(), log=log, core=config.client_core,
        )  # fmt: skip
        procs.wait_listening(upstream, port, log)
        upstream_url = f"http://127.0.0.1:{port}/api/v1"
        for db in config.dbs:
            prepare_database(config, db)
        nominal = config.nominal_ms / 1000
        print(
            f"\nserver core {config.server_core}, client and upstream core {config.client_core}; "
            f"{config.tokens} tokens at {config.rate:g}/s (nominal {nominal:.2f} s)\n",
            flush=True,
        )
        print(report.ROUND_HEADER, flush=True)
        for spec in plan(config):
            remaining = config.remaining()
            if remaining is not None and remaining < MIN_ROUND_S:
                row = {**spec, "skipped": "time budget", "replies": 0, "errors": 0}
                row.pop("group")
                rows.append(row)
                print(report.round_line(row), flush=True)
                continue
            row = round_with_server(config, upstream_url, **spec)
            rows.append(row)
            print(report.round_line(row), flush=True)
    finally:
        if upstream is not None:
            procs.stop(upstream)
        procs.stop_all()
        if "postgres" in config.dbs:
            drop_postgres(config)
    meta = {
        "started": began.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "quick": config.quick,
        "tokens": config.tokens,
        "rate": config.rate,
        "nominal_ms": config.nominal_ms,
        "concurrency": sorted(config.concurrency),
        "http_concurrency": config.http_concurrency,
        "http_dbs": config.http_dbs,
        "budget_s": config.budget or None,
        "first_delta_timeout_s": config.first_delta_timeout,
        "reply_timeout_s": config.timeout,
        "dbs": config.dbs,
        "skipped": skipped,
        "warmup_replies": WARMUP,
        "probe": {"replies": PROBE_REPLIES, "tokens": PROBE_TOKENS} if config.probe else None,
        "server_core": config.server_core,
        "client_core": config.client_core,
        "pinned": config.server_core is not None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": git_commit(),
    }
    results = report.build(meta, rows)
    (config.out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    markdown = report.markdown(results)
    (config.out / "latest.md").write_text(markdown)
    print("\n" + markdown)
    print(
        f"wrote {config.out / 'latest.json'} and {config.out / 'latest.md'} "
        f"({meta['duration_s']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
