"""A cluster of real processes: nginx (Debian's) with deploy/nginx.conf in front of two Daphne
workers on PostgreSQL and the Redis channel layer, optionally behind TCP proxies the tests own.

Used by tests/test_cluster.py (fixture ``cluster``) and by ``make cluster``
(``python -m tests.cluster``), which serves the demo that way for people to try.

- nginx runs as a process of ours, never the system service: ``nginx -p <dir> -c <dir>/nginx.conf``
  with ``daemon off``, its pid file, logs and temporary files in that directory, on a free
  loopback port. Its site configuration is deploy/nginx.conf itself, with the lines marked
  ``cluster:`` filled in (worker ports, listen address, static root, and in tests a diagnostic
  header naming the worker that answered).
- Workers are tests.servers.DaphneServer processes with ``--proxy-headers``, on fixed ports (a
  restarted worker comes back where nginx expects it).
- The database is one of its own on the machine's PostgreSQL (``create_database``), migrated by
  ``prepare_database`` (demo logins, users and enabled models), whatever database the test suite
  itself runs on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.servers import ROOT, DaphneServer, ServerProcess, free_port
from tests.tcp_proxy import TcpProxy

NGINX_SITE = ROOT / "deploy" / "nginx.conf"
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USER = os.environ.get("PGUSER", "postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
UPSTREAM_HEADER = "X-Streamchat-Upstream"


def nginx_binary() -> str | None:
    """Debian's nginx (``apt-get install nginx``; .ci/run installs it), or None."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


# -- nginx ----------------------------------------------------------------------------------------


def render_site(
    workers: Iterable[int], *, listen: int, static_root: Path, diagnostic: bool = False
) -> str:
    """deploy/nginx.conf with its ``cluster:`` lines filled in. Fails if a marked line is missing,
    so the file the tests run cannot drift from the file that is documented."""
    text = NGINX_SITE.read_text()
    ports = list(workers)

    def fill(marker: str, lines: Callable[[str], list[str]]) -> None:
        """The first line marked ``# cluster: <marker>`` becomes ``lines(its text)``; other lines
        with the same marker go."""
        nonlocal text
        pattern = re.compile(rf"^([ \t]*)(.*?)[ \t]*# cluster: {marker}\b[^\n]*\n", re.M)
        matches = list(pattern.finditer(text))
        assert matches, f"deploy/nginx.conf has no line marked '# cluster: {marker}'"
        first = matches[0]
        rendered = "".join(f"{first.group(1)}{line}\n" for line in lines(first.group(2)))
        pieces, position = [text[: first.start()], rendered], first.end()
        for match in matches[1:]:
            pieces.append(text[position : match.start()])
            position = match.end()
        pieces.append(text[position:])
        text = "".join(pieces)

    fill(
        r"worker \d+",
        lambda line: [re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", line) for port in ports],
    )
    fill("listen", lambda _: [f"listen 127.0.0.1:{listen};"])
    fill("server_name", lambda _: ["server_name 127.0.0.1 localhost;"])
    fill("static root", lambda _: [f"alias {static_root}/;"])
    fill(
        "diagnostic headers",
        lambda _: [f"add_header {UPSTREAM_HEADER} $upstream_addr always;"] if diagnostic else [],
    )
    return text


MAIN_CONF = """\
# Written by tests/cluster.py: nginx as a process of the tests (not the system service).
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{
    worker_connections 4096;
}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    {mime_types}
    default_type application/octet-stream;
    include {dir}/streamchat.conf;
}}
"""


class NginxServer(ServerProcess):
    """nginx on ``listen`` in front of ``workers`` (ports), everything of it in ``directory``."""

    def __init__(
        self,
        directory: Path,
        workers: list[int],
        *,
        port: int | None = None,
        static_root: Path | None = None,
        diagnostic: bool = False,
        new_session: bool = False,
    ) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        self.directory = directory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        site = render_site(
            workers,
            listen=self.port,
            static_root=static_root or directory / "static",
            diagnostic=diagnostic,
        )
        (directory / "streamchat.conf").write_text(site)
        mime = Path("/etc/nginx/mime.types")
        (directory / "nginx.conf").write_text(
            MAIN_CONF.format(dir=directory, mime_types=f"include {mime};" if mime.exists() else "")
        )
        command = [
            binary,
            "-p",
            str(directory),
            "-c",
            str(directory / "nginx.conf"),
            "-e",
            str(directory / "error.log"),
        ]
        self._start(
            command,
            cwd=directory,
            env=dict(os.environ),
            log=directory / "nginx.out",
            new_session=new_session,
        )

    def log(self) -> str:
        error_log = self.directory / "error.log"
        text = error_log.read_text(errors="replace") if error_log.exists() else ""
        return (super().log() + text)[-6000:]

    def stop(self) -> None:
        """Graceful (SIGQUIT): open connections end first, as a reload or a stop in production."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


# -- PostgreSQL -----------------------------------------------------------------------------------


def postgres_url(database: str, port: int = PG_PORT) -> str:
    return f"postgres://{PG_USER}@{PG_HOST}:{port}/{database}"


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect(
        f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres", autocommit=True, connect_timeout=5
    )


def create_database(name: str, *, drop_first: bool = False) -> bool:
    """Create database ``name`` on the machine's PostgreSQL; False if it already existed."""
    from psycopg import sql

    with _admin_connection() as connection:
        if drop_first:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if exists:
            return False
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def drop_database(name: str) -> None:
    from psycopg import sql

    with _admin_connection() as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


SETUP_SCRIPT = """
import json, sys
import django
django.setup()
from django.core.management import call_command
spec = json.loads(sys.argv[1])
call_command("migrate", interactive=False, verbosity=0)
call_command("demo_setup")
from django.contrib.auth import get_user_model
from streamchat.models import ChatModel
User = get_user_model()
for name in spec["users"]:
    if not User.objects.filter(username=name).exists():
        User.objects.create_user(name, password=spec["password"])
for index, model in enumerate(spec["models"]):
    ChatModel.objects.update_or_create(
        model_id=model, defaults={"enabled": True, "is_default": index == 0}
    )
"""


def prepare_database(
    env: dict[str, str],
    *,
    users: Iterable[str] = (),
    password: str = "",
    models: Iterable[str] = (),
    quiet: bool = True,
) -> None:
    """Migrate the database ``env`` points at, make the demo logins, ``users`` and ``models``."""
    spec = json.dumps({"users": list(users), "password": password, "models": list(models)})
    result = subprocess.run(
        [sys.executable, "-c", SETUP_SCRIPT, spec],
        cwd=ROOT,
        env=env,
        capture_output=quiet,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise RuntimeError(f"preparing the cluster database failed:\n{result.stderr}")


# -- the cluster ----------------------------------------------------------------------------------


class Cluster:
    """nginx and two Daphne workers on one database and one Redis, optionally behind proxies.

    ``env``: the workers' environment (settings module, upstream, knobs); the cluster adds
    DATABASE_URL and REDIS_URL (through the proxies when ``proxies``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        database: str,
        env: dict[str, str],
        redis_db: int = 14,
        proxies: bool = False,
        diagnostic: bool = False,
        nginx_port: int | None = None,
        worker_ports: list[int] | None = None,
        static_root: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.directory = directory
        self.database = database
        self.diagnostic = diagnostic
        self.static_root = static_root
        self.new_session = new_session
        self.pg_proxy = TcpProxy(PG_PORT) if proxies else None
        self.redis_proxy = TcpProxy(REDIS_PORT) if proxies else None
        pg_port = self.pg_proxy.port if self.pg_proxy else PG_PORT
        redis_port = self.redis_proxy.port if self.redis_proxy else REDIS_PORT
        self.redis_url = f"redis://{REDIS_HOST}:{redis_port}/{redis_db}"
        self.database_url = postgres_url(database, pg_port)
        self.env = {**env, "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}
        self.ports = worker_ports or [free_port(), free_port()]
        self.nginx_port = nginx_port
        self.workers: list[DaphneServer | None] = [None] * len(self.ports)
        self.starts = [0] * len(self.ports)
        self.nginx: NginxServer | None = None

    # addresses
    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    @property
    def ws_url(self) -> str:
        assert self.nginx is not None
        return self.nginx.ws_url

    def worker_index(self, upstream_addr: str) -> int:
        """Which worker an ``$upstream_addr`` names (the last address: the one that answered)."""
        port = int(upstream_addr.split(",")[-1].strip().rsplit(":", 1)[1])
        return self.ports.index(port)

    # processes
    def start(self) -> Cluster:
        errors: list[BaseException] = []

        def run(thread_index: int) -> None:
            try:
                self.start_worker(thread_index)
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(self.ports))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.stop()
            raise errors[0]
        self.nginx = NginxServer(
            self.directory / "nginx",
            self.ports,
            port=self.nginx_port,
            static_root=self.static_root,
            diagnostic=self.diagnostic,
            new_session=self.new_session,
        )
        return self

    def start_worker(self, index: int) -> DaphneServer:
        self.starts[index] += 1
        log = self.directory / f"worker-{'ab'[index]}-{self.starts[index]}.log"
        worker = DaphneServer(
            env=self.env,
            port=self.ports[index],
            args=["--proxy-headers"],
            log=log,
            new_session=self.new_session,
        )
        self.workers[index] = worker
        return worker

    def worker(self, index: int) -> DaphneServer:
        worker = self.workers[index]
        assert worker is not None, f"worker {index} is not running"
        return worker

    def signal(self, index: int, signum: int) -> None:
        self.worker(index).process.send_signal(signum)

    def wait_exit(self, index: int, timeout: float) -> int:
        """Wait for worker ``index`` to exit (after a signal): its exit status."""
        worker = self.worker(index)
        try:
            code = worker.process.wait(timeout)
        finally:
            if worker.process.poll() is not None:
                worker.stop()  # closes its log
        return code

    def stop_worker(self, index: int, timeout: float = 60) -> None:
        """SIGTERM (a drain), then SIGKILL after ``timeout``."""
        worker = self.workers[index]
        if worker is None:
            return
        if worker.process.poll() is None:
            worker.process.terminate()
            try:
                worker.process.wait(timeout)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(5)
        worker.stop()

    def logs(self) -> str:
        """The tail of every process's log, for a failing assertion."""
        parts = []
        for index, worker in enumerate(self.workers):
            if worker is not None:
                parts.append(f"--- worker {'ab'[index]} ---\n{worker.log()[-3000:]}")
        if self.nginx is not None:
            parts.append(f"--- nginx ---\n{self.nginx.log()[-2000:]}")
        return "\n".join(parts)

    def stop(self, timeout: float = 60) -> None:
        threads = [
            threading.Thread(target=self.stop_worker, args=(i, timeout))
            for i in range(len(self.workers))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.nginx is not None:
            self.nginx.stop()
        for proxy in (self.pg_proxy, self.redis_proxy):
            if proxy is not None:
                proxy.stop()

    # rows (read directly, never through the proxies: the tests look while the proxy is cut)
    def query(self, statement: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(
            f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}", connect_timeout=5
        ) as connection:
            return connection.execute(statement, list(params)).fetchall()

    def replies(self) -> dict[int, tuple[str, str]]:
        """Every assistant message: id → (status, content)."""
        rows = self.query(
            "SELECT id, status, content FROM streamchat_message WHERE role = 'assistant'"
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    def reply(self, reply_id: int) -> tuple[str, str]:
        return self.replies()[reply_id]


# -- make cluster ---------------------------------------------------------------------------------

MAKE_DATABASE = "streamchat_cluster"


def main() -> int:
    """``make cluster``: the demo on nginx + two Daphne workers + Redis + PostgreSQL, in the
    foreground until Ctrl-C or SIGTERM; then the workers drain and everything stops."""
    port = int(os.environ.get("PORT", "8000"))
    sim_port = int(os.environ.get("SIM_PORT", "8765"))
    worker_ports = [int(p) for p in os.environ.get("WORKER_PORTS", "8001,8002").split(",")]
    from tests.services import reachable

    missing = [
        name
        for name, ok in (
            ("nginx (apt-get install nginx)", nginx_binary() is not None),
            (f"PostgreSQL on {PG_HOST}:{PG_PORT}", reachable(PG_HOST, PG_PORT)),
            (f"Redis on {REDIS_HOST}:{REDIS_PORT}", reachable(REDIS_HOST, REDIS_PORT)),
        )
        if not ok
    ]
    if missing:
        print("make cluster needs " + ", ".join(missing) + ".", file=sys.stderr)
        return 2

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchat_site.settings")
    import django

    django.setup()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        "DATABASE_URL": postgres_url(MAKE_DATABASE),
    }
    children: list[subprocess.Popen[bytes]] = []
    directory = ROOT / "var" / "cluster"  # logs of this run (the last run's are wiped)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    if not os.environ.get("OPENROUTER_API_KEY"):
        print(f"OPENROUTER_API_KEY is not set: replies come from the simulator on {sim_port}.")
        simulator = subprocess.Popen(
            [sys.executable, "manage.py", "openrouter_simulator", "--port", str(sim_port)],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        children.append(simulator)
        env.update(
            OPENROUTER_BASE_URL=f"http://127.0.0.1:{sim_port}/api/v1",
            OPENROUTER_API_KEY="sk-or-v1-simulator-demo-key",
            STREAMCHAT_SIMULATOR="1",
        )
    if create_database(MAKE_DATABASE):
        print(f"Created the PostgreSQL database {MAKE_DATABASE}.")
    print("Migrating; demo logins:")
    prepare_database(env, quiet=False)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    cluster = Cluster(
        directory,
        database=MAKE_DATABASE,
        env=env,
        redis_db=int(os.environ.get("CLUSTER_REDIS_DB", "0")),
        nginx_port=port,
        worker_ports=worker_ports,
        static_root=ROOT / "staticfiles",
        new_session=True,
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        cluster.start()
        print(
            f"Serving on {cluster.url}/ (nginx) → Daphne workers on "
            f"{', '.join(str(p) for p in cluster.ports)}; database {MAKE_DATABASE}, "
            f"Redis {cluster.redis_url}.\nLogs in {directory}. Ctrl-C stops (workers drain first)."
        )
        while not stopping.wait(1):
            for index, worker in enumerate(cluster.workers):
                if worker is not None and worker.process.poll() is not None:
                    print(f"worker {'ab'[index]} exited; starting it again", file=sys.stderr)
                    cluster.start_worker(index)
    finally:
        print("Stopping: the workers drain (DRAIN_SECONDS), then nginx stops.")
        cluster.stop(timeout=float(os.environ.get("STOP_TIMEOUT", "45")))
        for child in children:
            child.terminate()
            child.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
