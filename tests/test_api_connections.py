"""The API calls' own HTTP/1.1 connections (server/http.py), over raw sockets: kept alive, pipelined,
bodies in pieces, a connection handed to aiohttp mid-way, and every call billed once either way."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from types import SimpleNamespace

import pytest

from hubproxy.server.http import Answer, ApiConnection, CallRoutes, Lanes
from hubproxy.server.state import STATE
from tests.conftest import HELLO, wait_for


def request(gateway, body: bytes, *, path: str = "/v1/chat/completions", extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nAuthorization: Bearer {gateway.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def read_answer(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One whole answer with a Content-Length from `sock` (bytes past it stay in `buffer`)."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        assert data, "the connection closed before an answer"
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if lines[0].split()[1].startswith("1"):  # 100 Continue: the answer follows
        buffer[:] = rest
        return read_answer(sock, buffer)
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        data = sock.recv(65536)
        assert data, "the connection closed inside an answer"
        rest += data
    buffer[:] = rest[length:]
    return int(lines[0].split()[1]), headers, rest[:length]


def connect(gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


def calls_billed(gateway) -> int:
    with gateway.db() as db:
        return db.execute("SELECT count(*) FROM usage WHERE status = 'ok'").fetchone()[0]


CHAT = json.dumps({"model": "deepseek-chat", "messages": HELLO}).encode()


def test_one_kept_alive_connection_serves_calls_before_and_after_it_is_handed_to_aiohttp(gateway):
    buffer = bytearray()
    with connect(gateway) as sock:
        for _ in range(2):
            sock.sendall(request(gateway, CHAT))
            status, headers, body = read_answer(sock, buffer)
            assert status == 200 and json.loads(body)["usage"]["prompt_tokens"] > 0
            assert headers["x-request-id"] and headers["content-type"].startswith("application/json")
        # a request the lean connection does not serve: aiohttp takes the connection over from here
        sock.sendall(f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gateway.key}\r\n\r\n".encode())
        status, _, body = read_answer(sock, buffer)
        assert status == 200 and "deepseek-chat" in {m["id"] for m in json.loads(body)["data"]}
        sock.sendall(request(gateway, CHAT))
        status, _, body = read_answer(sock, buffer)
        assert status == 200 and json.loads(body)["choices"]
    assert wait_for(lambda: calls_billed(gateway) == 3)


def test_pipelined_calls_are_answered_in_order(gateway):
    buffer = bytearray()
    bodies = [json.dumps({"model": "deepseek-chat", "messages": HELLO, "max_tokens": n}).encode() for n in (5, 6, 7)]
    with connect(gateway) as sock:
        sock.sendall(b"".join(request(gateway, body) for body in bodies))
        ids = []
        for _ in bodies:
            status, headers, _ = read_answer(sock, buffer)
            assert status == 200
            ids.append(headers["x-request-id"])
    assert len(set(ids)) == 3 and ids == sorted(ids)  # request ids count up: answered in the order sent
    assert wait_for(lambda: calls_billed(gateway) == 3)


def test_a_body_that_arrives_in_pieces_is_read_whole(gateway):
    whole = request(gateway, CHAT)
    buffer = bytearray()
    with connect(gateway) as sock:
        for start in range(0, len(whole), 40):
            sock.sendall(whole[start : start + 40])
            time.sleep(0.01)
        status, _, body = read_answer(sock, buffer)
    assert status == 200 and json.loads(body)["choices"]


def test_connection_close_is_honoured(gateway):
    buffer = bytearray()
    with connect(gateway) as sock:
        sock.sendall(request(gateway, CHAT, extra="Connection: close\r\n"))
        status, headers, _ = read_answer(sock, buffer)
        assert status == 200 and headers["connection"] == "close"
        assert sock.recv(100) == b""  # closed after the answer


def test_a_chunked_body_and_an_expect_header_are_served_by_aiohttp(gateway):
    buffer = bytearray()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gateway.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with connect(gateway) as sock:
        sock.sendall(head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(CHAT), CHAT))
        status, _, body = read_answer(sock, buffer)
        assert status == 200 and json.loads(body)["choices"]
    with connect(gateway) as sock:
        whole = request(gateway, CHAT, extra="Expect: 100-continue\r\n")
        sock.sendall(whole[: -len(CHAT)])
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(CHAT)
        status, _, body = read_answer(sock, buffer)
        assert status == 200 and json.loads(body)["choices"]
    assert wait_for(lambda: calls_billed(gateway) == 2)


def test_an_unknown_key_on_a_lean_connection_gets_the_routes_own_error_shape(gateway):
    buffer = bytearray()
    body = json.dumps({"model": "claude-sonnet", "max_tokens": 5, "messages": HELLO}).encode()
    with connect(gateway) as sock:
        sock.sendall(request(gateway, body, path="/v1/messages").replace(gateway.key.encode(), b"sk-nope"))
        status, headers, answer = read_answer(sock, buffer)
    assert status == 401 and json.loads(answer)["type"] == "error" and headers["x-request-id"]
    assert "sk-nope" not in gateway.log()


def test_lean_calls_are_in_the_access_log_without_their_query(gateway):
    buffer = bytearray()
    with connect(gateway) as sock:
        sock.sendall(request(gateway, CHAT, path="/v1/chat/completions?secret=1"))
        status, _, _ = read_answer(sock, buffer)
    assert status == 200
    line = wait_for(lambda: [x for x in gateway.log().splitlines() if '"POST /v1/chat/completions" 200' in x])
    assert "secret" not in gateway.log() and line


PLAIN = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Note: \xe9t\xe9\tz"


@pytest.mark.parametrize(
    ("head", "served_here"),
    [
        (PLAIN, True),
        (PLAIN.replace(b"completions", b"completions?key=1"), True),
        (PLAIN.replace(b"Host:", b"Host :"), False),  # a space before the colon
        (PLAIN + b"\r\n  folded", False),  # an obsolete line folding
        (PLAIN.replace(b"Host: x\r\n", b"Host: x\n"), False),  # a lone LF
        (PLAIN + b"\r\nA: b\x00", False),  # a control character
        (PLAIN + b"\r\nContent-Length: 5", False),  # two lengths
        (PLAIN.replace(b"Length: 5", b"Length: +5"), False),
        (PLAIN.replace(b"Length: 5", b"Length: \xb2"), False),  # a digit only to Unicode
        (PLAIN + b"\r\nTransfer-Encoding: chunked", False),
        (PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
        (PLAIN.replace(b"POST", b"GET"), False),
        (PLAIN + b"\r\nA(b: c", False),  # a name that is not a token
        (PLAIN + b"\r\n: c", False),
        (PLAIN.replace(b"/v1/chat/completions", b"/v1/models"), False),
        (PLAIN.replace(b"completions", b"complet%69ons"), False),
    ],
)
def test_only_a_plain_head_is_read_here_anything_else_is_aiohttps(head, served_here):
    routes = CallRoutes()
    routes.exact["/v1/chat/completions"] = lambda request: None
    lanes = SimpleNamespace(routes=routes, app_keys={})
    connection = ApiConnection(lanes, asyncio.new_event_loop())  # type: ignore[arg-type]
    assert (connection._plain_call(head) is not None) is served_here


def test_a_kept_alive_connection_is_closed_after_keepalive_seconds_without_a_call():
    """One idle timer per connection (not one per call): closed once idle that long, never while calls come."""

    async def answer(request):
        return Answer(b"{}")

    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        routes = CallRoutes()
        routes.exact["/v1/chat/completions"] = answer
        settings = SimpleNamespace(max_body_mb=1, body_timeout=5, header_timeout=5)
        app = {STATE: SimpleNamespace(config=SimpleNamespace(server=settings))}
        guard = SimpleNamespace(
            accept=lambda t: (True, None), release=lambda a: None, too_slow=print, settings=settings
        )
        lanes = Lanes(app, routes, guard, None, False, 0.3)  # type: ignore[arg-type]
        server = await loop.create_server(lambda: ApiConnection(lanes, loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        call = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"

        async def calls_every(gap: float, count: int) -> bool:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(count):
                writer.write(call)
                await reader.readuntil(b"{}")
                await asyncio.sleep(gap)
            closed = await asyncio.wait_for(reader.read(1), 2) == b""
            writer.close()
            return closed

        busy = asyncio.create_task(calls_every(0.1, 8))  # 0.8 s of calls 0.1 s apart: kept open throughout
        idle_closed = await calls_every(0.0, 1)  # one call, then nothing: closed after ~0.3 s
        busy_closed = await busy
        server.close()
        return idle_closed, busy_closed

    assert asyncio.run(scenario()) == (True, True)
