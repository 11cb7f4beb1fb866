"""Property: whatever interleaving of calls, top-ups and rule changes happens, the money adds up."""

from __future__ import annotations

import asyncio

import openai
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubproxy.store.sql.accounts import ledger_mismatches
from tests.conftest import HELLO

CALL = st.tuples(
    st.just("call"),
    st.sampled_from(["chat", "stream", "stream_usage", "embed", "fail"]),
    st.integers(min_value=1, max_value=3000),
)
TOPUP = st.tuples(st.just("topup"), st.sampled_from(["0.000001", "0.01", "1"]), st.none())
RULE = st.tuples(
    st.just("rule"),
    st.sampled_from(
        [
            ("--rpm", "1000"),
            ("--spend-limit", "0.001"),
            ("--max-parallel", "3"),
            ("--clear", "rpm"),
            ("--clear", "spend-limit"),
            ("--tpm", "100000"),
        ]
    ),
    st.none(),
)
BURST = st.tuples(st.just("burst"), st.integers(min_value=2, max_value=8), st.none())
OPERATIONS = st.lists(st.one_of(CALL, TOPUP, RULE, BURST), min_size=1, max_size=8)


def money_adds_up(gateway) -> None:
    with gateway.db() as db:
        mismatched = ledger_mismatches(db)
        credits = db.execute("SELECT coalesce(sum(amount), 0) FROM ledger WHERE kind != 'charge'").fetchone()[0]
        costs = db.execute("SELECT coalesce(sum(cost), 0) FROM usage").fetchone()[0]
        balances = db.execute("SELECT sum(balance) FROM users").fetchone()[0]
        open_reservations = db.execute("SELECT count(*) FROM reservations").fetchone()[0]
    assert mismatched == []
    assert credits - costs == balances
    assert open_reservations == 0


def run_call(client: openai.OpenAI, kind: str, max_tokens: int) -> None:
    try:
        if kind == "chat":
            client.chat.completions.create(model="deepseek-chat", messages=HELLO, max_tokens=max_tokens)
        elif kind in ("stream", "stream_usage"):
            options = {"include_usage": True} if kind == "stream_usage" else None
            list(
                client.chat.completions.create(
                    model="ds", messages=HELLO, max_tokens=max_tokens, stream=True, stream_options=options
                )
            )
        elif kind == "embed":
            client.embeddings.create(model="text-embedding", input="a b c")
        else:
            client.chat.completions.create(model="fail-500", messages=HELLO)
    except openai.APIStatusError as err:
        assert err.status_code in (402, 429, 500, 503), err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_interleavings_never_break_ledger_equals_balance(gateway, operations):
    client = gateway.client()
    for op, arg, extra in operations:
        if op == "call":
            run_call(client, arg, extra)
        elif op == "topup":
            gateway.cli("users", "topup", "dev@example.com", arg)
        elif op == "rule":
            gateway.cli("keys", "update", gateway.key_id, *arg)
        else:
            asyncio.run(gateway.fire(gateway.key, arg))
    money_adds_up(gateway)
