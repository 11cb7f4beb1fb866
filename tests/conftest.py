"""Fixtures: a temp HUBPROXY_HOME, a fake upstream on a real port, the real server as a subprocess,
the real CLI, and the official OpenAI SDK pointed at the server."""

from __future__ import annotations

import asyncio
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from hubproxy.cli import app as cli_app
from tests.fake_upstream import FakeUpstream

PRICE_IN, PRICE_OUT = "0.27", "1.10"
HELLO = [{"role": "user", "content": "say hello to me"}]
SPECIAL_MODELS = [
    "long-answer",
    "cc-tool",
    "codex-tool",
    "fail-500",
    "rate-limited",
    "no-usage",
    "reasoning",
    "tools",
    "slow-stream",
    "echo-key",
    "hang",
    "die-mid-stream",
    "aider-edit",
    "honest",
]


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def raw_request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> HttpResult:
    """A raw HTTP call (for what the SDK would refuse to send: bad JSON, odd headers)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return HttpResult(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05):
    """Poll until `predicate()` is truthy; fail the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cli:
    """Runs the real Typer app in-process; `json` parses --json output."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, ok: bool = True):
        result = self.runner.invoke(cli_app, ["--home", str(self.home), *args], input=input)
        if ok and result.exit_code != 0:
            raise AssertionError(f"hubproxy {' '.join(args)} failed: {result.output}{result.exception!r}")
        return result

    def json(self, *args: str, input: str | None = None, ok: bool = True):
        return json.loads(self(*args, "--json", input=input, ok=ok).stdout)


def run_cli(
    home: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a separate process (`env`: variables to set for it)."""
    return subprocess.run(
        [sys.executable, "-m", "hubproxy", "--home", str(home), *args],
        input=input,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


POSTGRES_URL = os.environ.get("HUBPROXY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HUBPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unreachable(what: str, exc: BaseException) -> None:
    """Skip with the reason where no server answers, unless under CI, where that is a failure."""
    message = f"{what} unreachable ({exc}); set HUBPROXY_TEST_POSTGRES_URL / HUBPROXY_TEST_REDIS_URL"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def database_url(name: str) -> str:
    return urllib.parse.urlsplit(POSTGRES_URL)._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """This run's own PostgreSQL template database, migrated once (the server outlives a run, so every
    name carries the run's pid and a random tag; everything is dropped at the end)."""
    import psycopg

    from hubproxy.store import open_store

    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        unreachable("PostgreSQL", exc)
    run = f"hubproxy_test_{os.getpid()}_{os.urandom(3).hex()}"
    admin.execute(f"CREATE DATABASE {run}_template")
    open_store(database_url(f"{run}_template"), create=True).close()
    admin.info  # noqa: B018 - keeps the connection in use across the session
    yield run
    for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{run}%",)).fetchall():
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def postgres_url(postgres_template: str) -> str:
    """A fresh database for one test, copied from the run's template."""
    import psycopg

    name = f"{postgres_template}_{os.urandom(4).hex()}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {postgres_template}_template")
    return database_url(name)


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except (redis.RedisError, OSError) as exc:
        unreachable("Redis", exc)
    return REDIS_URL


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """ "sqlite" unless a test module parametrizes it (`BACKENDS`), which runs its tests on both."""
    return getattr(request, "param", "sqlite")


BACKENDS = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, request: pytest.FixtureRequest) -> Path:
    monkeypatch.setenv("HUBPROXY_HOME", str(tmp_path))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    if backend == "postgres":
        monkeypatch.setenv("HUBPROXY_DATABASE_URL", request.getfixturevalue("postgres_url"))
    else:
        monkeypatch.delenv("HUBPROXY_DATABASE_URL", raising=False)
    return tmp_path


def open_database(home: Path):
    """The gateway's database as a test reads it: SQLite's file, or PostgreSQL through the adapter that
    takes the same SQL (`?` placeholders)."""
    url = os.environ.get("HUBPROXY_DATABASE_URL")
    if url:
        from hubproxy.store.postgres.db import connect

        return connect(url)
    from hubproxy.store.sqlite.db import connect as connect_sqlite

    return connect_sqlite(home / "hubproxy.db")


def balance_and_ledger(gateway, email: str) -> tuple[int, int]:
    """A user's balance and the sum of their ledger, from the database."""
    with gateway.db() as db:
        return db.execute(
            "SELECT balance, (SELECT sum(amount) FROM ledger WHERE user_id = users.id) FROM users WHERE email = ?",
            (email,),
        ).fetchone()


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


@pytest.fixture
def upstream():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


class Gateway:
    """A running `hubproxy serve` subprocess and handles to drive it."""

    def __init__(self, home: Path, cli: Cli, upstream: FakeUpstream, port: int) -> None:
        self.home, self.cli, self.upstream, self.port = home, cli, upstream, port
        self.log_path = home / "server.log"
        self.proc: subprocess.Popen | None = None
        self.key = ""
        self.key_id = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, *serve_args: str) -> Gateway:
        env = {**os.environ, "UPSTREAM_KEY": self.upstream.api_key}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hubproxy",
                "--home",
                str(self.home),
                "serve",
                "--port",
                str(self.port),
                *serve_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if raw_request("GET", f"http://127.0.0.1:{self.port}/health").status == 200:
                    return self
            except OSError:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                break
        raise RuntimeError("server did not start:\n" + self.log_path.read_text())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def client(self, key: str | None = None, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0, **kwargs)

    def async_client(self, key: str | None = None, **kwargs) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0, **kwargs)

    def db(self) -> sqlite3.Connection:
        return open_database(self.home)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        """GET /health as the operator sees it (with the admin token the server keeps in its home)."""
        token = (self.home / "admin-token").read_text().strip()
        url = f"http://127.0.0.1:{self.port}/health"
        return raw_request("GET", url, headers={"Authorization": f"Bearer {token}"}).json()

    def key_works(self, key: str) -> bool:
        """Whether the server accepts `key` right now (it learns about new keys within a second)."""
        try:
            self.client(key=key).models.list()
            return True
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            return False

    async def fire(
        self, key: str, n: int, model: str = "deepseek-chat", max_tokens: int | None = 1000, messages: list = HELLO
    ) -> list:
        """`n` chat calls at once; each result is a completion or the exception it raised."""
        params = {} if max_tokens is None else {"max_tokens": max_tokens}
        client = self.async_client(key=key)
        try:
            calls = [client.chat.completions.create(model=model, messages=messages, **params) for _ in range(n)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    def new_user(self, email: str, balance: str) -> str:
        self.cli("users", "add", email, "--balance", balance)
        return self.cli.json("keys", "create", "--user", email, "--name", "test")["key"]


UPSTREAM_MARK = "http://upstream.invalid:1"  # the fake upstream's origin in a template home's config.toml
TEMPLATES: dict[bool, Path] = {}


def configured_template(native: bool) -> Path:
    """A home configured once per test process (`init`, the providers and models every test starts
    from), which `configure` copies: 17 CLI calls once instead of in every test. `native`: with the
    Messages and Responses providers too. Built on SQLite whatever the test's backend (the config
    commands do not touch the database; a PostgreSQL test's database comes from its own template)."""
    if native in TEMPLATES:
        return TEMPLATES[native]
    home = Path(tempfile.mkdtemp(prefix="hubproxy-template-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    url = os.environ.pop("HUBPROXY_DATABASE_URL", None)
    try:
        cli = Cli(home)
        cli("init")
        cli("providers", "add", "fake", "--base-url", f"{UPSTREAM_MARK}/v1", "--api-key-env", "UPSTREAM_KEY")
        models = [
            ("deepseek-chat", [], PRICE_IN, PRICE_OUT),
            ("ds", ["--upstream-model", "deepseek-chat"], PRICE_IN, PRICE_OUT),
            ("text-embedding", [], "0.02", "0"),
            *((name, [], PRICE_IN, PRICE_OUT) for name in SPECIAL_MODELS),
        ]
        for name, alias, price_in, price_out in models:
            cli(
                "models",
                "add",
                name,
                "--provider",
                "fake",
                *alias,
                "--input-price",
                price_in,
                "--output-price",
                price_out,
            )
        if native:
            for provider, base, api, model in (
                ("claude", UPSTREAM_MARK, "messages", "claude-native"),
                ("oai", f"{UPSTREAM_MARK}/v1", "responses", "gpt-native"),
            ):
                cli("providers", "add", provider, "--base-url", base, "--api", api, "--api-key-env", "UPSTREAM_KEY")
                cli(
                    "models",
                    "add",
                    model,
                    "--provider",
                    provider,
                    "--input-price",
                    PRICE_IN,
                    "--output-price",
                    PRICE_OUT,
                )
    finally:
        if url is not None:
            os.environ["HUBPROXY_DATABASE_URL"] = url
    TEMPLATES[native] = home
    return home


def configure(cli: Cli, upstream: FakeUpstream, native: bool = False) -> None:
    """The test's home as `init` and the usual providers and models leave it (copied from the
    process's template, the fake upstream's address put in)."""
    template = configured_template(native)
    for item in template.iterdir():
        shutil.copy2(item, cli.home / item.name)
    config = cli.home / "config.toml"
    origin = upstream.base_url.removesuffix("/v1")
    config.write_text(config.read_text().replace(UPSTREAM_MARK, origin))


def serving(home: Path, cli: Cli, upstream: FakeUpstream) -> Iterator[Gateway]:
    """A configured home served by `hubproxy serve`, with dev@example.com's key; stopped afterwards."""
    gw = Gateway(home, cli, upstream, free_port())
    gw.key = gw.new_user("dev@example.com", "5")
    gw.key_id = cli.json("keys", "list", "--user", "dev@example.com")[0]["id"]
    gw.start()
    yield gw
    if gw.proc and gw.proc.poll() is None:
        gw.stop()


@pytest.fixture
def gateway(home: Path, cli: Cli, upstream: FakeUpstream):
    configure(cli, upstream)
    yield from serving(home, cli, upstream)


@pytest.fixture
def hub(home: Path, cli: Cli, upstream: FakeUpstream):
    """A gateway with a provider for each wire API: chat (`fake`), Messages and Responses."""
    configure(cli, upstream, native=True)
    yield from serving(home, cli, upstream)
