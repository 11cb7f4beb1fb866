"""What probing the running gateway as an attacker and as a careless client found, each pinned:
malformed HTTP, slow and greedy clients, bad shapes, forged tokens, loose file modes, CORS."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import tomllib

import jwt
import openai
import pytest
import tomli_w

from tests.conftest import HELLO, raw_request, wait_for


def exchange(port: int, data: bytes, source: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """Send raw bytes; read one whole answer, or until the server closes or goes quiet."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        answer = b""
        try:
            while not complete(answer) and (chunk := sock.recv(65536)):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


def complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if found and line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def with_server_settings(gateway, **settings) -> None:
    gateway.stop()
    path = gateway.home / "config.toml"
    config = tomllib.loads(path.read_text())
    config["server"].update(settings)
    path.write_text(tomli_w.dumps(config))
    gateway.start()


def malformed_requests(key: str) -> list[bytes]:
    chat = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    auth = f"Authorization: Bearer {key}".encode()
    return [
        chat + auth + b"\rX-Evil: 1\r\nContent-Length: 2\r\n\r\n{}",
        chat + auth + b"\x00\r\nContent-Length: 2\r\n\r\n{}",
        chat + auth + b"\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GE\x01T /v1/models HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n\r\n",
        chat + auth + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        chat + auth + b"\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        chat + auth + b"\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(1000)) + b"\r\n",
    ]


def test_malformed_http_gets_a_generic_400_and_one_short_log_line_without_the_key(gateway):
    for data in malformed_requests(gateway.key):
        answer = exchange(gateway.port, data)
        assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400"), answer[:200]
        assert gateway.key.encode() not in answer and b"X-Evil" not in answer
    expected = len(malformed_requests(gateway.key))
    wait_for(lambda: gateway.log().count("malformed HTTP request from 127.0.0.1") == expected)
    log = gateway.log()
    assert gateway.key not in log and gateway.key[6:20] not in log
    assert "Traceback" not in log and "Error handling request" not in log
    for line in log.splitlines():
        assert "malformed HTTP request" not in line or len(line) < 120, line


def test_a_broken_chunked_body_is_400_not_500(gateway):
    body = b'{"model": "deepseek-chat", "messages": []}'
    data = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        + f"Authorization: Bearer {gateway.key}\r\n\r\n".encode()
        + b"%x\r\n" % len(body)
        + body
        + b"\r\nnot-hex\r\n"
    )
    answer = exchange(gateway.port, data)
    assert answer[:12] in (b"HTTP/1.1 400", b"HTTP/1.0 400"), answer[:200]
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "fail-500", "messages": "hi"}, "messages"),
        ({"model": "fail-500", "messages": ["hi"]}, "messages"),
        ({"model": "fail-500", "messages": [{"content": "no role"}]}, "messages"),
        ({"model": "fail-500", "messages": []}, "messages"),
        ({"model": "fail-500", "messages": HELLO, "tools": "all"}, "tools"),
        ({"model": "fail-500", "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": "fail-500", "messages": HELLO, "stop": 3}, "stop"),
        ({"model": "fail-500", "messages": HELLO, "n": 0}, "n"),
    ],
)
def test_a_malformed_chat_request_is_400_naming_the_field_and_never_goes_upstream(gateway, body, param):
    resp = raw_request(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {gateway.key}"},
    )
    assert resp.status == 400, resp.body
    assert resp.json()["error"]["param"] == param
    assert gateway.upstream.requests == []


@pytest.mark.parametrize(
    "endpoint,body",
    [
        ("embeddings", {"model": "text-embedding"}),
        ("embeddings", {"model": "text-embedding", "input": 5}),
        ("completions", {"model": "deepseek-chat", "prompt": {"a": 1}}),
    ],
)
def test_embeddings_and_completions_check_their_input(gateway, endpoint, body):
    resp = raw_request(
        "POST", f"{gateway.base_url}/{endpoint}", json.dumps(body).encode(), {"Authorization": f"Bearer {gateway.key}"}
    )
    assert resp.status == 400 and resp.json()["error"]["param"] in ("input", "prompt")
    assert gateway.upstream.requests == []


def test_one_callers_failing_requests_cannot_open_the_breaker_for_everyone(gateway):
    other = gateway.new_user("other@example.com", "5")
    wait_for(lambda: gateway.key_works(other))
    attacker = gateway.client()
    for _ in range(5):
        with pytest.raises(openai.InternalServerError):
            attacker.chat.completions.create(model="fail-500", messages=HELLO)
    assert gateway.health()["deployments"]["fake/fail-500"]["state"] == "closed"
    calls = len(gateway.upstream.requests)
    with pytest.raises(openai.InternalServerError):
        gateway.client(key=other).chat.completions.create(model="fail-500", messages=HELLO)
    assert len(gateway.upstream.requests) == calls + 1, "the other user's call still reached the upstream"
    assert gateway.health()["deployments"]["fake/fail-500"]["state"] == "open", "two users failing: it is down"
    with pytest.raises(openai.APIStatusError) as refused:
        gateway.client(key=other).chat.completions.create(model="fail-500", messages=HELLO)
    assert refused.value.status_code == 503


def test_home_directory_and_files_are_private_and_loose_ones_are_fixed(gateway):
    home = gateway.home
    gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    for name in ("config.toml", "hubproxy.db", "hubproxy.db-wal", "hubproxy.db-shm", "admin-token"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    gateway.stop()
    os.chmod(home / "hubproxy.db", 0o644)
    os.chmod(home / "config.toml", 0o664)
    os.chmod(home, 0o755)
    result = gateway.cli("init")
    assert "made private" in result.stdout and "hubproxy.db" in result.stdout
    assert stat.S_IMODE((home / "hubproxy.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert "made private" not in gateway.cli("init").stdout, "said once, when something changed"


def test_a_new_home_is_private_from_the_start(tmp_path, monkeypatch):
    home = tmp_path / "fresh"
    result = subprocess.run(
        [sys.executable, "-m", "hubproxy", "--home", str(home), "init"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "hubproxy.db").stat().st_mode) == 0o600


def test_slow_headers_are_cut_off_and_one_address_cannot_hold_every_connection(gateway):
    with_server_settings(gateway, header_timeout=1.0, max_connections_per_address=3)
    started = time.monotonic()
    with socket.socket() as slow:
        slow.settimeout(10)
        slow.connect(("127.0.0.1", gateway.port))
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
        closed = False
        for _ in range(20):
            try:
                slow.sendall(b"X-Trickle: 1\r\n")
                if slow.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed = True
                break
            time.sleep(0.3)
    assert closed and time.monotonic() - started < 4, "cut off after header_timeout, not left open"

    held = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            sock.connect(("127.0.0.1", gateway.port))
            held.append(sock)
        time.sleep(0.2)
        assert exchange(gateway.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2", timeout=2) == b""
        answer = exchange(gateway.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=2)
        assert answer.startswith(b"HTTP/1.1 200"), "another address, and this machine itself, are still served"
    finally:
        for sock in held:
            sock.close()
    wait_for(
        lambda: exchange(
            gateway.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", source="127.0.0.2", timeout=2
        ).startswith(b"HTTP/1.1 200"),
        timeout=3,
    )


def test_connection_limits_follow_a_reloaded_config(gateway):
    path = gateway.home / "config.toml"
    config = tomllib.loads(path.read_text())
    config["server"]["max_connections_per_address"] = 1
    path.write_text(tomli_w.dumps(config))
    wait_for(lambda: "config reloaded" in gateway.log(), timeout=5)
    with socket.socket() as held:
        held.bind(("127.0.0.2", 0))
        held.connect(("127.0.0.1", gateway.port))
        time.sleep(0.2)
        assert exchange(gateway.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2", timeout=2) == b""


def test_a_body_that_does_not_arrive_gets_408(gateway):
    with_server_settings(gateway, body_timeout=1.0)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
        + f"Authorization: Bearer {gateway.key}\r\n\r\n".encode()
    )
    started = time.monotonic()
    answer = exchange(gateway.port, head + b'{"model": "deepseek-chat"', timeout=5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 4


def test_a_huge_declared_body_is_refused_at_once(gateway):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n"
        + f"Authorization: Bearer {gateway.key}\r\n\r\n".encode()
    )
    started = time.monotonic()
    answer = exchange(gateway.port, head, timeout=5)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 2
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff\xfe", b"x-api-key: \xc3\x28", b"api-key: sk-hp-\xe9"])
def test_a_key_that_is_not_utf8_is_401_not_500(gateway, header):
    data = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + header + b"\r\n\r\n"
    answer = exchange(gateway.port, data)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert "Traceback" not in gateway.log()


def test_deeply_nested_input_is_400_not_500(gateway):
    nested = b"[" * 1000 + b"]" * 1000
    body = b'{"model": "deepseek-chat", "messages": [{"role": "user", "content": "x", "extra": ' + nested + b"}]}"
    resp = raw_request("POST", f"{gateway.base_url}/chat/completions", body, {"Authorization": f"Bearer {gateway.key}"})
    assert resp.status == 400 and "nested" in resp.json()["error"]["message"]
    assert "Traceback" not in gateway.log()


def test_health_tells_strangers_only_that_it_is_alive(gateway):
    gateway.client().chat.completions.create(model="deepseek-chat", messages=HELLO)
    url = f"http://127.0.0.1:{gateway.port}/health"
    assert raw_request("GET", url).json() == {"status": "ok"}
    keyed = raw_request("GET", url, headers={"Authorization": f"Bearer {gateway.key}"}).json()
    assert "users" not in keyed and "last_error" not in keyed["deployments"]["fake/deepseek-chat"]
    assert keyed["deployments"]["fake/deepseek-chat"]["state"] == "closed"
    assert raw_request("GET", url, headers={"Authorization": "Bearer sk-hp-forged"}).status == 401
    admin = gateway.health()
    assert admin["users"] == 1 and "last_error" in admin["deployments"]["fake/deepseek-chat"]
    status = gateway.cli.json("providers", "status", "--url", f"http://127.0.0.1:{gateway.port}")
    assert status["fake/deepseek-chat"]["state"] == "closed"


def test_a_client_that_hangs_up_on_a_plain_call_releases_it_at_once(gateway):
    body = json.dumps({"model": "hang", "messages": HELLO, "max_tokens": 5}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {gateway.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(head + body)
        wait_for(lambda: gateway.health()["open_calls"] == 1)
    wait_for(lambda: gateway.health()["open_calls"] == 0, timeout=2)

    def rows() -> list:
        with gateway.db() as db:
            return db.execute("SELECT status, http_status, cost FROM usage WHERE model = 'hang'").fetchall()

    assert wait_for(rows, timeout=2) == [("client_gone", 499, 0)]
    assert gateway.cli.json("balance", "dev@example.com")["balance"] == "5.00"


def test_serve_on_a_busy_port_fails_before_saying_anything_else(gateway, tmp_path):
    other_home = tmp_path / "other"  # this home is being served: a second serve on it is refused first
    result = subprocess.run(
        [sys.executable, "-m", "hubproxy", "--home", str(other_home), "serve", "--port", str(gateway.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr
    assert "hubproxy on" not in result.stdout and "ready on" not in result.stdout + result.stderr


def test_serve_says_ready_only_once_it_listens(gateway):
    line = next(line for line in gateway.log().splitlines() if "ready on" in line)
    assert f":{gateway.port}" in line


def test_browser_clients_get_cors_for_allowed_origins_only(gateway):
    url = f"{gateway.base_url}/chat/completions"
    preflight = {
        "Origin": "http://localhost:3210",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }
    resp = raw_request("OPTIONS", url, headers=preflight)
    assert resp.status == 204
    assert resp.headers["access-control-allow-origin"] == "http://localhost:3210"
    assert resp.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    assert "POST" in resp.headers["access-control-allow-methods"]
    evil = raw_request("OPTIONS", url, headers={**preflight, "Origin": "https://evil.example"})
    assert evil.status == 403 and "access-control-allow-origin" not in evil.headers
    body = json.dumps({"model": "deepseek-chat", "messages": HELLO}).encode()
    headers = {"Authorization": f"Bearer {gateway.key}", "Origin": "http://127.0.0.1:8000"}
    answer = raw_request("POST", url, body, headers)
    assert answer.status == 200 and answer.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert "x-request-id" in answer.headers["access-control-expose-headers"]
    stream = json.dumps({"model": "deepseek-chat", "messages": HELLO, "stream": True}).encode()
    streamed = raw_request("POST", url, stream, headers)
    assert streamed.status == 200 and streamed.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    refused = raw_request("POST", url, body, {**headers, "Authorization": "Bearer sk-hp-nope"})
    assert refused.status == 401 and refused.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert "access-control-allow-origin" not in raw_request("POST", url, body, {**headers, "Origin": "null"}).headers


def test_cors_origins_are_configurable(gateway):
    with_server_settings(gateway, cors_origins=["https://chat.example.com"])
    url = f"{gateway.base_url}/models"
    ok = raw_request(
        "GET", url, headers={"Authorization": f"Bearer {gateway.key}", "Origin": "https://chat.example.com"}
    )
    assert ok.headers["access-control-allow-origin"] == "https://chat.example.com"
    local = raw_request("GET", url, headers={"Authorization": f"Bearer {gateway.key}", "Origin": "http://localhost:3"})
    assert "access-control-allow-origin" not in local.headers


@pytest.fixture
def accounts_gateway(gateway):
    with_server_settings(gateway, accounts_api=True)
    gateway.root = f"http://127.0.0.1:{gateway.port}"
    return gateway


def account_call(accounts_gateway, method: str, path: str, body: dict | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    return raw_request(method, accounts_gateway.root + path, json.dumps(body).encode() if body else None, headers)


def test_a_signed_token_with_a_strange_subject_is_401(accounts_gateway):
    secret = json.loads((accounts_gateway.home / "credentials.json").read_text())["jwt-secret"]
    for subject in ("admin", "-1", "\uff11", "999"):
        token = jwt.encode({"sub": subject, "exp": int(time.time()) + 60}, secret, algorithm="HS256")
        resp = account_call(accounts_gateway, "GET", "/api-keys", token=token)
        assert resp.status == 401, (subject, resp.body)
    assert "Traceback" not in accounts_gateway.log()


def test_logout_and_a_new_password_end_login_tokens(accounts_gateway):
    resp = account_call(accounts_gateway, "POST", "/auth/register", {"email": "t@example.com", "password": "secret123"})
    first = resp.json()["token"]
    second = account_call(
        accounts_gateway, "POST", "/auth/login", {"email": "t@example.com", "password": "secret123"}
    ).json()
    assert account_call(accounts_gateway, "GET", "/api-keys", token=first).status == 200
    assert account_call(accounts_gateway, "POST", "/auth/logout", token=first).status == 200
    for token in (first, second["token"]):
        ended = account_call(accounts_gateway, "GET", "/api-keys", token=token)
        assert ended.status == 401 and "ended" in ended.json()["error"]["message"]
    token = account_call(
        accounts_gateway, "POST", "/auth/login", {"email": "t@example.com", "password": "secret123"}
    ).json()
    change = {"password": "wrong-one", "new_password": "better456"}
    assert account_call(accounts_gateway, "POST", "/auth/password", change, token=token["token"]).status == 401
    change["password"] = "secret123"
    changed = account_call(accounts_gateway, "POST", "/auth/password", change, token=token["token"])
    assert changed.status == 200
    assert account_call(accounts_gateway, "GET", "/api-keys", token=token["token"]).status == 401
    assert account_call(accounts_gateway, "GET", "/api-keys", token=changed.json()["token"]).status == 200
    assert (
        account_call(
            accounts_gateway, "POST", "/auth/login", {"email": "t@example.com", "password": "secret123"}
        ).status
        == 401
    )
    fresh = account_call(
        accounts_gateway, "POST", "/auth/login", {"email": "t@example.com", "password": "better456"}
    ).json()
    accounts_gateway.cli("users", "set-password", "t@example.com", input="chosen-by-admin\n")
    wait_for(lambda: account_call(accounts_gateway, "GET", "/api-keys", token=fresh["token"]).status == 401, timeout=3)
    login = {"email": "t@example.com", "password": "chosen-by-admin"}
    fresh = account_call(accounts_gateway, "POST", "/auth/login", login).json()
    assert account_call(accounts_gateway, "GET", "/api-keys", token=fresh["token"]).status == 200
    accounts_gateway.cli("users", "disable", "t@example.com")
    accounts_gateway.cli("users", "enable", "t@example.com")
    wait_for(lambda: account_call(accounts_gateway, "GET", "/api-keys", token=fresh["token"]).status == 401, timeout=3)


def test_failed_logins_from_one_address_cannot_lock_the_owner_out_from_another(accounts_gateway):
    account_call(accounts_gateway, "POST", "/auth/register", {"email": "v@example.com", "password": "secret123"})
    for _ in range(5):
        account_call(accounts_gateway, "POST", "/auth/login", {"email": "v@example.com", "password": "guess"})
    refused = account_call(accounts_gateway, "POST", "/auth/login", {"email": "v@example.com", "password": "guess"})
    assert refused.status == 429 and "login attempts" in refused.json()["error"]["message"]
    assert "key" not in refused.json()["error"]["message"]
    port = accounts_gateway.port
    body = json.dumps({"email": "v@example.com", "password": "secret123"}).encode()
    data = (
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert exchange(port, data, source="127.0.0.3").startswith(b"HTTP/1.1 200")
