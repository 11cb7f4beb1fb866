"""The upstream HTTP client against raw servers on real sockets: reuse, framing, breaks, timeouts."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hubproxy.upstream.http import PAUSE_AT, Client, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BODY = b'{"model":"m"}'


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    return head + await reader.readexactly(length)


def run(handler: Handler, test: Callable[[Client, object], Awaitable[None]], tls: ssl.SSLContext | None = None) -> None:
    """Serve `handler` on 127.0.0.1 (over TLS with `tls`) and run `test(client, origin)` against it."""

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        client = Client(connect_timeout=2)
        try:
            await test(client, client.origin(f"{'https' if tls else 'http'}://127.0.0.1:{port}/v1"))
        finally:
            client.close()
            server.close()

    asyncio.run(main())


def test_requests_one_after_another_share_a_connection_and_carry_the_body():
    seen: list[bytes] = []
    connections = []

    async def handler(reader, writer):
        connections.append(writer)
        while not reader.at_eof():
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(ok(b'{"n":%d}' % len(seen)))

    async def test(client, origin):
        head = origin.head("/chat/completions", {"Authorization": "Bearer k"})
        for n in (1, 2, 3):
            resp = await client.post(origin, head, BODY, timeout=2)
            assert resp.status == 200
            assert await resp.read(2) == b'{"n":%d}' % n
            resp.release()

    run(handler, test)
    assert len(connections) == 1
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer k\r\nContent-Length: 13\r\n\r\n" + BODY in seen[0]


def test_a_reused_connection_that_breaks_before_any_answer_is_replaced_without_failing_the_call():
    connections = []

    async def handler(reader, writer):
        connections.append(writer)
        await read_request(reader)
        writer.write(ok(b"{}"))
        await read_request(reader)
        writer.close()  # its keep-alive ran out just as the next request came: closed, no answer

    async def test(client, origin):
        head = origin.head("/x", {})
        for _ in range(3):
            resp = await client.post(origin, head, BODY, timeout=2)
            assert await resp.read(2) == b"{}"
            resp.release()

    run(handler, test)
    assert len(connections) == 3


def test_a_stream_arrives_piece_by_piece_and_pauses_reading_when_not_drained():
    go_on = asyncio.Event()
    big = b"x" * (PAUSE_AT * 3)

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
        await writer.drain()

    async def test(client, origin):
        resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
        pieces = resp.chunks(timeout=2)
        assert await anext(pieces) == b"first", "the first piece comes before the server sends the rest"
        go_on.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if resp._conn.paused:
                break
        assert resp._conn.paused, "a client that does not keep up makes hubproxy stop reading upstream"
        rest = b"".join([piece async for piece in pieces])
        assert rest == big
        assert not resp._conn.paused
        resp.release()

    run(handler, test)


def test_a_body_without_length_ends_at_the_close_and_its_connection_is_not_reused():
    connections = []

    async def handler(reader, writer):
        connections.append(writer)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def test(client, origin):
        for _ in range(2):
            resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
            assert await resp.read(2) == b"all of it"
            resp.release()

    run(handler, test)
    assert len(connections) == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", "closed mid-answer"),
        (b"NOT HTTP AT ALL\r\n\r\n", "malformed HTTP answer"),
        (b"", "disconnected"),
    ],
)
def test_a_broken_answer_is_an_upstream_error(answer, message):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def test(client, origin):
        with pytest.raises(UpstreamError, match=message):
            resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
            await resp.read(2)
        assert not origin.idle

    run(handler, test)


def test_each_wait_is_bounded_by_the_timeout():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def silent(reader, writer):
        await asyncio.sleep(5)

    async def test(client, origin):
        resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await resp.read(0.2)
        assert asyncio.get_running_loop().time() - started < 1
        resp.close()

    async def test_silent(client, origin):
        with pytest.raises(TimeoutError):
            await client.post(origin, origin.head("/x", {}), BODY, timeout=0.2)
        assert not origin.idle, "a connection that timed out is not reused"

    run(handler, test)
    run(silent, test_silent)


def test_waits_that_each_end_in_time_never_time_out_however_long_the_answer():
    """One timer per connection is put off wait after wait: chunks 0.2 s apart under a 0.3 s bound
    arrive over a second without a TimeoutError; then a silence past the bound still times out."""

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):
            await asyncio.sleep(0.2)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        await asyncio.sleep(5)

    async def test(client, origin):
        resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
        got = b""
        with pytest.raises(TimeoutError):
            async for chunk in resp.chunks(0.3):
                got += chunk
        assert got == b"x" * 6
        resp.close()

    run(handler, test)


def test_nobody_listening_is_an_upstream_error():
    async def main():
        client = Client(connect_timeout=2)
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        origin = client.origin(f"http://127.0.0.1:{port}")
        with pytest.raises(UpstreamError, match="could not connect"):
            await client.post(origin, origin.head("/x", {}), BODY, timeout=2)

    asyncio.run(main())


def test_request_heads_name_the_host_and_path_of_the_base_url():
    client = Client(connect_timeout=1)
    head = client.origin("https://api.example.com/v1/").head("/chat/completions", {"A": "b"})
    assert head == b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\nA: b\r\nContent-Length: "
    assert client.origin("http://[::1]:8000").head("/x", {}).startswith(b"POST /x HTTP/1.1\r\nHost: [::1]:8000\r\n")
    assert client.origin("https://api.example.com/v1/") is client.origin("https://api.example.com/v1/")


CERT = Path(__file__).parent / "data" / "localhost.pem"  # self-signed for 127.0.0.1, made for these tests


def serve_tls(test: Callable[[Client, object], Awaitable[None]]) -> None:
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(ok(b'{"over":"tls"}'))
        await writer.drain()

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(CERT, CERT.with_name("localhost-key.pem"))
    run(handler, test, tls)


def test_https_upstreams_are_verified_against_the_trusted_certificates(monkeypatch):
    async def untrusted(client, origin):
        with pytest.raises(UpstreamError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await client.post(origin, origin.head("/x", {}), BODY, timeout=2)

    async def trusted(client, origin):
        resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
        assert await resp.read(2) == b'{"over":"tls"}'
        resp.release()

    serve_tls(untrusted)
    monkeypatch.setenv("SSL_CERT_FILE", str(CERT))  # how a user trusts a private CA, e.g. a self-hosted vLLM
    serve_tls(trusted)


def test_connections_left_idle_since_a_peak_are_closed_as_others_come_back():
    async def handler(reader, writer):
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(ok(b"{}"))

    async def call(client, origin):
        resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
        await resp.read(2)
        return resp

    async def test(client, origin):
        peak = await asyncio.gather(*(call(client, origin) for _ in range(3)))
        for resp in peak:
            resp.release()
        oldest, middle, newest = origin.idle
        oldest.idle_since -= 3600
        (await call(client, origin)).release()
        assert oldest.closed and oldest not in origin.idle
        assert origin.idle == [middle, newest] and not middle.closed

    run(handler, test)


def test_interim_answers_are_skipped_for_the_real_one():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
        writer.write(ok(b'{"real":true}', b"X-Upstream: yes\r\n"))
        await writer.drain()

    async def test(client, origin):
        resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
        assert resp.status == 200
        assert await resp.read(2) == b'{"real":true}'
        assert resp.headers["X-Upstream"] == "yes" and "Link" not in resp.headers
        resp.release()

    run(handler, test)


def test_new_connections_opened_at_once_share_one_address_lookup():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(ok(b"{}", b"Connection: close\r\n"))
        await writer.drain()
        writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        lookups = []
        real_lookup = loop.getaddrinfo

        async def counted_lookup(*args, **kwargs):
            lookups.append(args[0])
            return await real_lookup(*args, **kwargs)

        loop.getaddrinfo = counted_lookup
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        client = Client(connect_timeout=2)
        origin = client.origin(f"http://localhost:{server.sockets[0].getsockname()[1]}")
        calls = [client.post(origin, origin.head("/x", {}), BODY, timeout=2) for _ in range(3)]
        for resp in await asyncio.gather(*calls):
            assert await resp.read(2) == b"{}"
            resp.release()
        server.close()
        return lookups

    assert asyncio.run(main()) == ["localhost"]


def test_an_address_that_refuses_falls_through_to_the_next():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(ok(b"{}"))
        await writer.drain()

    async def main():
        dead = await asyncio.start_server(handler, "127.0.0.1", 0)
        dead_port = dead.sockets[0].getsockname()[1]
        dead.close()
        await dead.wait_closed()
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Client(connect_timeout=2)
        origin = client.origin(f"http://upstream.test:{port}")
        origin._addresses = [("127.0.0.1", dead_port), ("127.0.0.1", port)]  # as a lookup of two would give
        origin._fresh_until = asyncio.get_running_loop().time() + 60
        resp = await client.post(origin, origin.head("/x", {}), BODY, timeout=2)
        assert await resp.read(2) == b"{}"
        resp.release()
        client.close()
        server.close()

    asyncio.run(main())
