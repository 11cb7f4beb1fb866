"""A model's reasoning carried through the chat pivot, so that it goes back to the vendor that made it.

Anthropic signs its thinking blocks and wants them back unchanged in a tool loop with thinking on
(https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking, read 2026-12-07); OpenAI's
Responses API gives a reasoning item an `encrypted_content` to send back when nothing is stored
upstream (`include: ["reasoning.encrypted_content"]`, https://platform.openai.com/docs/guides/reasoning,
read 2026-12-07). Chat has a field for neither, so the translators pass one of their own on the chat
messages and chunks between them, FIELD: an opaque string tagged with the format it came from. A
Responses client gets it as a reasoning item's `encrypted_content`, a Messages client as a thinking
block's `signature`; either sends it back unchanged, and the translator to the format that made it
unpacks it. Any other upstream never sees it.
"""

from __future__ import annotations

import base64
import binascii

import orjson

FIELD = "reasoning_encrypted"
ANTHROPIC = "hubproxy-anthropic:"
OPENAI = "hubproxy-openai:"
THINKING_BLOCKS = ("thinking", "redacted_thinking")


def from_anthropic(blocks: list[dict]) -> str | None:
    """The thinking blocks of one Messages answer, packed (None: it had none)."""
    kept = [block for block in blocks if block.get("type") in THINKING_BLOCKS]
    return ANTHROPIC + base64.urlsafe_b64encode(orjson.dumps(kept)).decode() if kept else None


def anthropic_blocks(token: object) -> list[dict]:
    """The thinking blocks a token from Anthropic holds, as Anthropic made them; none for anything else."""
    if not isinstance(token, str) or not token.startswith(ANTHROPIC):
        return []
    try:
        blocks = orjson.loads(base64.urlsafe_b64decode(token[len(ANTHROPIC) :]))
    except (binascii.Error, ValueError):
        return []
    if not isinstance(blocks, list):
        return []
    return [b for b in blocks if isinstance(b, dict) and b.get("type") in THINKING_BLOCKS]


def from_openai(encrypted: object) -> str | None:
    return OPENAI + encrypted if isinstance(encrypted, str) and encrypted else None


def openai_encrypted(token: object) -> str | None:
    """The `encrypted_content` a token from a Responses upstream holds; None for anything else."""
    if isinstance(token, str) and token.startswith(OPENAI) and len(token) > len(OPENAI):
        return token[len(OPENAI) :]
    return None


def without_field(chat_body: bytes) -> bytes:
    """A chat request for a chat upstream: FIELD taken off its messages (it is for the translators)."""
    if FIELD.encode() not in chat_body:  # a translator writes the field itself, unescaped: absent, it is not there
        return chat_body
    doc = orjson.loads(chat_body)
    for message in doc.get("messages") or ():
        if isinstance(message, dict):
            message.pop(FIELD, None)
    return orjson.dumps(doc)


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith((ANTHROPIC, OPENAI))
