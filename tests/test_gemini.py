"""Google's Gemini API through hubproxy, both ways: Google's own `google-genai` SDK as the client, and a
fake upstream that speaks Gemini's wire format. Every client format (chat, Messages, Responses,
Gemini) reaches every upstream format, streamed and not, through a tool loop, billed exactly what the
upstream reported."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import anthropic
import pytest
from google import genai
from google.genai import types

from hubproxy.protocols import gemini
from tests.conftest import PRICE_IN, PRICE_OUT, Gateway, balance_and_ledger, configure, raw_request, serving, wait_for
from tests.fake_upstream import GEMINI_SIGNATURE, REPLY
from tests.test_holds import post_all

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
QUESTION = "what is the weather in Paris"
UPSTREAMS = ("chat", "messages", "responses", "gemini")
CLIENTS = ("chat", "messages", "responses", "gemini")


def cost(prompt: int, output: int) -> int:
    return int(prompt * Decimal(PRICE_IN) * 10**6 + output * Decimal(PRICE_OUT) * 10**6)


@pytest.fixture
def gem_hub(home, cli, upstream):
    """A gateway with a provider for each of the four wire APIs, and a tool-calling model on each."""
    configure(cli, upstream, native=True)
    origin = upstream.base_url.removesuffix("/v1")
    cli("providers", "add", "goog", "--base-url", origin, "--api", "gemini", "--api-key-env", "UPSTREAM_KEY")
    for api, provider in zip(UPSTREAMS, ("fake", "claude", "oai", "goog"), strict=True):
        cli(
            *("models", "add", f"tc-{api}", "--provider", provider, "--upstream-model", "tool-caller"),
            *("--input-price", PRICE_IN, "--output-price", PRICE_OUT),
        )
    cli(
        *("models", "add", "gemini-native", "--provider", "goog"),
        *("--input-price", PRICE_IN, "--output-price", PRICE_OUT),
    )
    yield from serving(home, cli, upstream)


def google_client(gw: Gateway, key: str | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=f"http://127.0.0.1:{gw.port}", api_version="v1beta")
    return genai.Client(api_key=key or gw.key, http_options=options)


def usage_row(gw: Gateway) -> tuple:
    with gw.db() as db:
        return db.execute(
            "SELECT endpoint, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost, estimated "
            "FROM usage ORDER BY id DESC LIMIT 1"
        ).fetchone()


def reported(gw: Gateway) -> tuple[int, int]:
    """What the upstream last reported, as prompt and output tokens by its own format's rules."""
    api, usage = gw.upstream.reported[-1]
    if api == "chat":
        return usage["prompt_tokens"], usage["completion_tokens"]
    if api == "messages":
        prompt = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
        return prompt, usage["output_tokens"]
    if api == "responses":
        return usage["input_tokens"], usage["output_tokens"]
    return usage["promptTokenCount"], usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]


def billed_as_reported(gw: Gateway) -> None:
    prompt, output = reported(gw)
    row = usage_row(gw)
    assert row[1:3] == (prompt, output) and row[5] == cost(prompt, output) and row[6] == 0, (row, prompt, output)


# --- one tool loop per client: ask, get get_weather(city=Paris), send "sunny" back, get the answer -----


def chat_loop(gw: Gateway, model: str, stream: bool) -> str:
    client = gw.client()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    messages: list[dict] = [{"role": "user", "content": QUESTION}]
    extra = {"stream_options": {"include_usage": True}} if stream else {}

    def turn() -> tuple[str, list[dict]]:
        answer = client.chat.completions.create(
            model=model, messages=messages, tools=tools, max_tokens=100, stream=stream, **extra
        )
        if not stream:
            calls = answer.choices[0].message.tool_calls or []
            return answer.choices[0].message.content or "", [c.model_dump() for c in calls]
        text, calls = "", {}
        for chunk in answer:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for call in choice.delta.tool_calls or ():
                    found = calls.setdefault(
                        call.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                    )
                    found["id"] = call.id or found["id"]
                    found["function"]["name"] += (call.function.name or "") if call.function else ""
                    found["function"]["arguments"] += (call.function.arguments or "") if call.function else ""
        return text, list(calls.values())

    _, calls = turn()
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    billed_as_reported(gw)
    messages += [{"role": "assistant", "content": None, "tool_calls": calls}]
    messages += [{"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"}]
    text, calls = turn()
    assert not calls
    billed_as_reported(gw)
    return text


def messages_loop(gw: Gateway, model: str, stream: bool) -> str:
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key=gw.key, max_retries=0)
    tools = [{"name": "get_weather", "description": "the weather", "input_schema": WEATHER_SCHEMA}]
    messages: list[dict] = [{"role": "user", "content": QUESTION}]

    def turn():
        if stream:
            with client.messages.stream(model=model, max_tokens=100, messages=messages, tools=tools) as events:
                return events.get_final_message()
        return client.messages.create(model=model, max_tokens=100, messages=messages, tools=tools)

    first = turn()
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [("get_weather", {"city": "Paris"})], first
    assert first.stop_reason == "tool_use"
    billed_as_reported(gw)
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]}]
    messages += [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}]}]
    second = turn()
    assert not [b for b in second.content if b.type == "tool_use"]
    billed_as_reported(gw)
    return "".join(b.text for b in second.content if b.type == "text")


def responses_loop(gw: Gateway, model: str, stream: bool) -> str:
    client = gw.client()
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]
    given: list[dict] = [{"role": "user", "content": QUESTION}]

    def turn():
        answer = client.responses.create(model=model, input=given, tools=tools, max_output_tokens=100, stream=stream)
        if not stream:
            return answer
        done = [e.response for e in answer if e.type == "response.completed"]
        assert len(done) == 1
        return done[0]

    first = turn()
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    billed_as_reported(gw)
    given += [calls[0].model_dump(exclude_none=True)]
    given += [{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}]
    second = turn()
    assert not [item for item in second.output if item.type == "function_call"]
    billed_as_reported(gw)
    return second.output_text


def gemini_loop(gw: Gateway, model: str, stream: bool) -> str:
    client = google_client(gw)
    declaration = types.FunctionDeclaration(
        name="get_weather", description="the weather", parameters_json_schema=WEATHER_SCHEMA
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[declaration])],
        max_output_tokens=100,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [types.Content(role="user", parts=[types.Part(text=QUESTION)])]

    def turn() -> list[types.Part]:
        if not stream:
            answer = client.models.generate_content(model=model, contents=contents, config=config)
            return list(answer.candidates[0].content.parts or [])
        parts: list[types.Part] = []
        for chunk in client.models.generate_content_stream(model=model, contents=contents, config=config):
            if chunk.candidates and chunk.candidates[0].content:
                parts += chunk.candidates[0].content.parts or []
        return parts

    parts = turn()
    calls = [p for p in parts if p.function_call]
    assert [(p.function_call.name, p.function_call.args) for p in calls] == [("get_weather", {"city": "Paris"})]
    billed_as_reported(gw)
    contents.append(types.Content(role="model", parts=parts))
    result = types.FunctionResponse(name="get_weather", id=calls[0].function_call.id, response={"output": "sunny"})
    contents.append(types.Content(role="user", parts=[types.Part(function_response=result)]))
    parts = turn()
    assert not [p for p in parts if p.function_call]
    billed_as_reported(gw)
    return "".join(p.text or "" for p in parts if not p.thought)


LOOPS = {"chat": chat_loop, "messages": messages_loop, "responses": responses_loop, "gemini": gemini_loop}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("upstream_api", UPSTREAMS)
@pytest.mark.parametrize("client_api", CLIENTS)
def test_every_client_reaches_every_upstream_through_a_tool_loop_billed_as_reported(
    gem_hub, client_api, upstream_api, stream
):
    text = LOOPS[client_api](gem_hub, f"tc-{upstream_api}", stream)
    assert text.split() == REPLY.split(), text


def test_a_gemini_upstream_gets_the_clients_bytes_with_the_key_in_googles_header(gem_hub):
    client = google_client(gem_hub)
    answer = client.models.generate_content(
        model="gemini-native", contents="say hello", config=types.GenerateContentConfig(max_output_tokens=50)
    )
    assert answer.text == REPLY
    sent = [r for r in gem_hub.upstream.requests if r["path"].startswith("/v1beta/")][-1]
    assert sent["path"] == "/v1beta/models/gemini-native:generateContent"
    assert sent["headers"]["x-goog-api-key"] == gem_hub.upstream.api_key
    assert gem_hub.key not in json.dumps(sent["headers"])
    assert sent["body"] == {
        "contents": [{"parts": [{"text": "say hello"}], "role": "user"}],
        "generationConfig": {"maxOutputTokens": 50},
    }
    # thoughts are output, the cached part of the prompt is in the prompt: billed as Google bills them
    assert usage_row(gem_hub) == ("/generateContent", 3, 8, 1, 2, cost(3, 8), 0)
    assert answer.usage_metadata.thoughts_token_count == 2


def test_the_thought_signature_goes_back_to_gemini_through_a_chat_clients_call_id(gem_hub):
    """Gemini 3 refuses a call sent back without its signature (the fake does too): a chat client's
    loop works only if the signature travelled in the id."""
    chat_loop(gem_hub, "tc-gemini", False)
    model_turn = gem_hub.upstream.requests[-1]["body"]["contents"][1]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0]["thoughtSignature"] == GEMINI_SIGNATURE


def test_a_call_without_a_limit_is_held_and_sent_with_the_one_it_was_held_by(gem_hub):
    client = google_client(gem_hub)
    client.models.generate_content(model="gemini-native", contents="say hello")
    sent = gem_hub.upstream.requests[-1]["body"]
    assert sent["generationConfig"]["maxOutputTokens"] > 0


def gemini_post(gw: Gateway, path: str, body: object, key: str | None = None, query: str = "") -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not False:
        headers["x-goog-api-key"] = key or gw.key
    url = f"http://127.0.0.1:{gw.port}/v1beta/models/{path}{query}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    result = raw_request("POST", url, raw, headers)
    return result.status, result.json()


HELLO = {"contents": [{"role": "user", "parts": [{"text": "say hello"}]}]}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"contents": []}, 400, "contents"),
        ({**HELLO, "generationConfig": {"maxOutputTokens": 0}}, 400, "maxOutputTokens"),
        ({**HELLO, "generationConfig": {"candidateCount": 9}}, 400, "candidateCount"),
        (
            {**HELLO, "generationConfig": {"maxOutputTokens": 5}, "generation_config": {"maxOutputTokens": 9}},
            400,
            "given twice",
        ),
        ({**HELLO, "generationConfig": {"maxOutputTokens": 5, "max_output_tokens": 90000}}, 400, "given twice"),
        ({**HELLO, "tools": [{"googleSearch": {}}]}, 400, "googleSearch"),
        ({**HELLO, "tools": [{"code_execution": {}}]}, 400, "codeExecution"),
        ({**HELLO, "cachedContent": "cachedContents/abc"}, 400, "cachedContent"),
        ({"contents": [{"role": "user", "parts": [{"fileData": {"fileUri": "gs://x/y.mp4"}}]}]}, 400, "fileData"),
        ({"contents": [{"role": "user", "parts": [{"text": 5}]}]}, 400, "text"),
    ],
)
def test_bad_requests_get_googles_error_shape_and_change_nothing(gem_hub, body, status, says):
    sent_before = len(gem_hub.upstream.requests)
    got, answer = gemini_post(gem_hub, "gemini-native:generateContent", body)
    assert got == status and answer["error"]["code"] == status and answer["error"]["status"] == "INVALID_ARGUMENT"
    assert says in answer["error"]["message"], answer
    assert len(gem_hub.upstream.requests) == sent_before


def test_snake_case_limits_are_read_as_google_reads_them(gem_hub):
    """Google takes `generation_config.max_output_tokens` and `candidate_count` too: the hold counts
    them (8 answers of 600,000 tokens at $1.10 per 1M pass the $5 balance; one does not)."""
    body = {**HELLO, "generation_config": {"max_output_tokens": 600_000, "candidate_count": 8}}
    got, answer = gemini_post(gem_hub, "gemini-native:generateContent", body)
    assert got == 402 and answer["error"]["status"] == "FAILED_PRECONDITION", answer
    body = {**HELLO, "generation_config": {"max_output_tokens": 600_000}}
    got, _ = gemini_post(gem_hub, "gemini-native:generateContent", body)
    assert got == 200
    sent = gem_hub.upstream.requests[-1]["body"]
    assert sent["generation_config"] == {"max_output_tokens": 600_000} and "generationConfig" not in sent


def test_keys_errors_and_routes_in_googles_shape(gem_hub):
    got, answer = gemini_post(gem_hub, "gemini-native:generateContent", HELLO, key="hp-wrong")
    assert got == 401 and answer["error"]["status"] == "UNAUTHENTICATED"
    got, answer = gemini_post(gem_hub, "gemini-native:generateContent", HELLO, key=False, query=f"?key={gem_hub.key}")
    assert got == 200 and answer["candidates"][0]["content"]["parts"][0]["text"] == REPLY
    got, answer = gemini_post(gem_hub, "gemini-native:embedContent", HELLO)
    assert got == 404 and answer["error"]["status"] == "NOT_FOUND" and "generateContent" in answer["error"]["message"]
    got, answer = gemini_post(gem_hub, "no-such-model:generateContent", HELLO)
    assert got == 404 and answer["error"]["status"] == "NOT_FOUND"
    got, answer = gemini_post(gem_hub, "gemini-native:streamGenerateContent", HELLO)
    assert got == 400 and "alt=sse" in answer["error"]["message"]
    gem_hub.upstream.usage.clear()
    got, answer = gemini_post(gem_hub, "tc-gemini:countTokens", HELLO)
    assert got == 200 and answer == {"totalTokens": 1001}  # the deployment's own count
    got, answer = gemini_post(gem_hub, "tc-chat:countTokens", HELLO)
    assert got == 200 and answer["totalTokens"] > 0  # counted here
    assert "Traceback" not in gem_hub.log()


def test_models_are_listed_as_google_lists_them(gem_hub):
    client = google_client(gem_hub)
    names = [m.name for m in client.models.list()]
    assert "models/gemini-native" in names and "models/tc-chat" in names
    assert client.models.get(model="gemini-native").name == "models/gemini-native"


def test_an_upstream_error_reaches_a_gemini_client_in_googles_shape(gem_hub, cli):
    prices = ("--input-price", PRICE_IN, "--output-price", PRICE_OUT)
    cli("models", "add", "gem-limited", "--provider", "goog", "--upstream-model", "rate-limited", *prices)
    cli("models", "add", "chat-limited", "--provider", "fake", "--upstream-model", "rate-limited", *prices)
    for model in ("gem-limited", "chat-limited"):
        got, answer = wait_for(
            lambda m=model: (r := gemini_post(gem_hub, f"{m}:generateContent", HELLO))[0] != 404 and r
        )
        assert got == 429 and answer["error"]["status"] == "RESOURCE_EXHAUSTED", answer


IMAGE = {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}}


@pytest.mark.parametrize(
    "body",
    [
        {**HELLO, "generation_config": {"candidate_count": 8, "max_output_tokens": 2000}},
        HELLO,  # no limit: the one it is held at goes up
        {
            "contents": [{"role": "user", "parts": [{"text": "what is in these?"}, *[IMAGE] * 20]}],
            "generationConfig": {"maxOutputTokens": 10},
        },
    ],
    ids=["eight-candidates-snake-case", "no-limit", "inline-images"],
)
def test_fifty_gemini_calls_cannot_overspend(gem_hub, cli, body):
    """50 calls at once on an upstream that bills every candidate to its limit and each inline part at
    2,000 tokens: some answered, some refused, the balance never below zero."""
    cli(
        "models",
        "add",
        "gem-honest",
        "--provider",
        "goog",
        "--upstream-model",
        "honest",
        "--input-price",
        PRICE_IN,
        "--output-price",
        PRICE_OUT,
    )
    key = gem_hub.new_user("honest@example.com", "0.05")
    wait_for(lambda: gemini_post(gem_hub, "gem-honest:countTokens", HELLO, key=key)[0] == 200)
    gem_hub.upstream.delay = 0.5
    raw = json.dumps(body).replace("_data", "\\u005fdata").encode()  # the keys as any JSON parser reads them

    url = f"http://127.0.0.1:{gem_hub.port}/v1beta/models/gem-honest:generateContent"
    statuses = asyncio.run(post_all(url, {"x-goog-api-key": key}, [raw] * 50))
    assert 200 in statuses and 402 in statuses and set(statuses) == {200, 402}
    balance, ledger = balance_and_ledger(gem_hub, "honest@example.com")
    assert 0 <= balance == ledger


@pytest.mark.parametrize(
    ("config", "written"),
    [
        ("", {"generationConfig": {"maxOutputTokens": 99}}),
        (',"generationConfig":null', {"generationConfig": {"maxOutputTokens": 99}}),
        (
            ',"generation_config":{"temperature":0.5}',
            {"generation_config": {"temperature": 0.5, "max_output_tokens": 99}},
        ),
    ],
)
def test_a_limit_goes_into_the_config_google_reads(config, written):
    """In front of a body without a config; into the one it has (null, or snake_case) otherwise, so no
    later key of the body undoes it."""
    endpoint = gemini.Endpoint("m", False)
    raw = b'{"contents":[{"parts":[{"text":"x"}]}]' + config.encode() + b"}"
    out, fields = endpoint.with_output_limit(raw, endpoint.read(raw), 99, "")
    assert fields.max_output == 99
    assert {k: v for k, v in json.loads(out).items() if k != "contents"} == written
