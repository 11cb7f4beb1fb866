"""The Redis limiter's own client (ratelimit/resp.py) against a real Redis: counts that hold while Redis
forgets its scripts or drops the connection, the URL's user, password and database, a Redis that does
not answer or cannot be reached (calls admitted, said once in the log, the password never), and a URL
option it does not use refused by `serve` in one line."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import urllib.parse
import uuid

import pytest
import redis

from hubproxy.accounts.rules import Limits
from hubproxy.errors import GatewayError
from hubproxy.ratelimit.redis_windows import RedisLimiter, keys_of
from tests.conftest import free_port, run_cli
from tests.test_tls import self_signed


async def admitted(limiter: RedisLimiter, key_id: str, calls: int, limits: Limits) -> int:
    count = 0
    for _ in range(calls):
        try:
            await limiter.admit(key_id, limits, 10, uuid.uuid4().hex)  # a request id each, as calls have
            count += 1
        except GatewayError as refused:
            assert refused.status == 429
    return count


def test_an_rpm_count_holds_while_redis_forgets_its_scripts_and_drops_the_connection(redis_url):
    admin = redis.Redis.from_url(redis_url)
    key_id = uuid.uuid4().hex

    async def run() -> list[int]:
        limiter = RedisLimiter(redis_url)
        try:
            first = await admitted(limiter, key_id, 2, Limits(rpm=5))
            admin.script_flush()  # what a Redis restart or an operator does: the next call sends it whole
            second = await admitted(limiter, key_id, 2, Limits(rpm=5))
            conn = limiter.client._conn
            assert conn is not None and conn.transport is not None
            host, port = conn.transport.get_extra_info("sockname")[:2]
            admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
            await asyncio.sleep(0.1)
            third = await admitted(limiter, key_id, 3, Limits(rpm=5))  # connected again: 1 of 3 fits
            return [first, second, third]
        finally:
            await limiter.close()

    try:
        assert asyncio.run(run()) == [2, 2, 1]
    finally:
        admin.delete(*keys_of(key_id))


def test_the_urls_user_password_and_database_are_used_and_a_wrong_password_never_logged(redis_url, caplog):
    admin = redis.Redis.from_url(redis_url)
    user, secret = f"hubproxy-test-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    admin.acl_setuser(user, enabled=True, passwords=[f"+{secret}"], commands=["+@all"], keys=["*"])
    base = redis_url.split("://", 1)[1].split("/", 1)[0]
    key_id = uuid.uuid4().hex

    async def run() -> tuple[int, int]:
        right = RedisLimiter(f"redis://{user}:{secret}@{base}/5")
        wrong = RedisLimiter(f"redis://{user}:not-{secret}@{base}/5")
        try:
            return await admitted(right, key_id, 3, Limits(rpm=2)), await admitted(wrong, key_id, 3, Limits(rpm=2))
        finally:
            await right.close()
            await wrong.close()

    try:
        with caplog.at_level(logging.ERROR, logger="hubproxy.server"):
            assert asyncio.run(run()) == (2, 3)  # a Redis that refuses the password limits nothing
        in_db5 = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/5")
        assert in_db5.exists(keys_of(key_id)[0]) and not admin.exists(keys_of(key_id)[0])
        log = caplog.text
        assert "Redis refused AUTH" in log and log.count("Redis unreachable") == 1 and secret not in log
        in_db5.delete(*keys_of(key_id))
    finally:
        admin.acl_deluser(user)


def test_a_redis_that_does_not_answer_or_cannot_be_reached_admits_the_call(caplog):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # connections are accepted by the kernel, and never answered

    async def run() -> tuple[object, object]:
        quiet = RedisLimiter(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        gone = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")
        try:
            return await quiet.admit("k", Limits(rpm=1), 1, "a"), await gone.admit("k", Limits(rpm=1), 1, "b")
        finally:
            await quiet.close()
            await gone.close()

    try:
        with caplog.at_level(logging.ERROR, logger="hubproxy.server"):
            assert asyncio.run(run()) == (None, None)
        assert "did not answer within 2 s" in caplog.text
    finally:
        silent.close()


@pytest.mark.parametrize("option", ["socket_timeout=5", "max_connections=3"])
def test_a_redis_url_option_hubproxy_does_not_use_is_refused_in_one_line(home, option):
    served = run_cli(home, "serve", "--port", str(free_port()), "--redis", f"redis://127.0.0.1:6379/0?{option}")
    assert served.returncode != 0 and "Traceback" not in served.stderr
    assert option.split("=")[0] in served.stderr and len(served.stderr.strip().splitlines()) == 1


def test_rediss_speaks_tls_and_checks_the_certificate(redis_url, tmp_path, caplog):
    """A TLS relay in front of the test's Redis, with a self-signed certificate: trusted through the
    URL's ssl_ca_certs the counts work; with the system's trust the certificate is refused."""
    cert, key = self_signed(tmp_path)
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    target = urllib.parse.urlsplit(redis_url)
    key_id = uuid.uuid4().hex

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port or 6379)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    async def run() -> tuple[int, int]:
        server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]
        trusted = RedisLimiter(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={urllib.parse.quote(cert)}")
        untrusted = RedisLimiter(f"rediss://127.0.0.1:{port}/0")
        try:
            return await admitted(trusted, key_id, 3, Limits(rpm=2)), await admitted(
                untrusted, key_id, 2, Limits(rpm=2)
            )
        finally:
            await trusted.close()
            await untrusted.close()
            server.close()

    try:
        with caplog.at_level(logging.ERROR, logger="hubproxy.server"):
            assert asyncio.run(run()) == (2, 2)  # the untrusted one reached nothing, so limited nothing
        assert "certificate verify failed" in caplog.text
    finally:
        redis.Redis.from_url(redis_url).delete(*keys_of(key_id))
