"""A checker for the Open Responses specification: what its OpenAPI document (version 2026-04-24,
https://www.openresponses.org, `public/openapi/openapi.json` of github.com/openresponses/openresponses,
read 2026-12-02) requires of a `ResponseResource`, of the output items and content parts in it, and
of each streamed event, field by field with the field's type. Written from the document's `required`
lists and property types; `problems` returns what does not conform, so a test can show all of it."""

from __future__ import annotations

NUMBER = (int, float)
NULL = type(None)

RESOURCE = {
    "id": str,
    "object": str,
    "created_at": int,
    "completed_at": (int, NULL),
    "status": str,
    "incomplete_details": (dict, NULL),
    "model": str,
    "previous_response_id": (str, NULL),
    "instructions": (str, list, NULL),
    "output": list,
    "error": (dict, NULL),
    "tools": list,
    "tool_choice": (str, dict),
    "truncation": str,
    "parallel_tool_calls": bool,
    "text": dict,
    "top_p": NUMBER,
    "presence_penalty": NUMBER,
    "frequency_penalty": NUMBER,
    "top_logprobs": int,
    "temperature": NUMBER,
    "reasoning": (dict, NULL),
    "usage": (dict, NULL),
    "max_output_tokens": (int, NULL),
    "max_tool_calls": (int, NULL),
    "store": bool,
    "background": bool,
    "service_tier": str,
    "metadata": object,
    "safety_identifier": (str, NULL),
    "prompt_cache_key": (str, NULL),
}
USAGE = {
    "input_tokens": int,
    "output_tokens": int,
    "total_tokens": int,
    "input_tokens_details": dict,
    "output_tokens_details": dict,
}
ITEMS = {
    "message": {"type": str, "id": str, "status": str, "role": str, "content": list},
    "function_call": {"type": str, "id": str, "call_id": str, "name": str, "arguments": str, "status": str},
    "function_call_output": {"type": str, "id": str, "call_id": str, "output": (str, list), "status": str},
    "reasoning": {"type": str, "id": str, "summary": list},
    "compaction": {"type": str, "id": str, "encrypted_content": str},
}
PARTS = {
    "input_text": {"type": str, "text": str},
    "output_text": {"type": str, "text": str, "annotations": list},
    "text": {"type": str, "text": str},
    "summary_text": {"type": str, "text": str},
    "reasoning_text": {"type": str, "text": str},
    "refusal": {"type": str, "refusal": str},
    "input_image": {"type": str, "image_url": (str, NULL), "detail": str},
    "input_file": {"type": str},
}
FUNCTION_TOOL = {
    "type": str,
    "name": str,
    "description": (str, NULL),
    "parameters": (dict, NULL),
    "strict": (bool, NULL),
}
ITEM_STATUS = ("in_progress", "completed", "incomplete")
_AT_ITEM = {"item_id": str, "output_index": int}
_AT_CONTENT = {**_AT_ITEM, "content_index": int}
_AT_SUMMARY = {**_AT_ITEM, "summary_index": int}
EVENTS = {
    "response.created": {"response": dict},
    "response.queued": {"response": dict},
    "response.in_progress": {"response": dict},
    "response.completed": {"response": dict},
    "response.failed": {"response": dict},
    "response.incomplete": {"response": dict},
    "response.output_item.added": {"output_index": int, "item": (dict, NULL)},
    "response.output_item.done": {"output_index": int, "item": (dict, NULL)},
    "response.reasoning_summary_part.added": {**_AT_SUMMARY, "part": dict},
    "response.reasoning_summary_part.done": {**_AT_SUMMARY, "part": dict},
    "response.content_part.added": {**_AT_CONTENT, "part": dict},
    "response.content_part.done": {**_AT_CONTENT, "part": dict},
    "response.output_text.delta": {**_AT_CONTENT, "delta": str},
    "response.output_text.done": {**_AT_CONTENT, "text": str},
    "response.refusal.delta": {**_AT_CONTENT, "delta": str},
    "response.refusal.done": {**_AT_CONTENT, "refusal": str},
    "response.reasoning.delta": {**_AT_CONTENT, "delta": str},
    "response.reasoning.done": {**_AT_CONTENT, "text": str},
    "response.reasoning_summary_text.delta": {**_AT_SUMMARY, "delta": str},
    "response.reasoning_summary_text.done": {**_AT_SUMMARY, "text": str},
    "response.output_text.annotation.added": {**_AT_CONTENT, "annotation_index": int, "annotation": (dict, NULL)},
    "response.function_call_arguments.delta": {**_AT_ITEM, "delta": str},
    "response.function_call_arguments.done": {**_AT_ITEM, "arguments": str},
    "error": {"error": dict},
}
ERROR_PAYLOAD = {"type": str, "code": (str, NULL), "message": str, "param": (str, NULL)}


def fields(where: str, value: object, required: dict) -> list[str]:
    """Each required field present, with its type (a bool is not a number here, as in JSON Schema)."""
    if not isinstance(value, dict):
        return [f"{where}: not an object"]
    found = []
    for name, types in required.items():
        if name not in value:
            found.append(f"{where}: '{name}' is required")
        elif types is not object and (
            not isinstance(value[name], types) or (value[name].__class__ is bool and bool not in _tuple(types))
        ):
            found.append(f"{where}.{name}: {value[name]!r} is not {types}")
    return found


def _tuple(types: object) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def part_problems(where: str, part: object) -> list[str]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in PARTS:
        return [f"{where}: {kind!r} is not an Open Responses content part"]
    return fields(where, part, PARTS[kind])


def item_problems(where: str, item: object) -> list[str]:
    kind = item.get("type") if isinstance(item, dict) else None
    if kind not in ITEMS:
        return [f"{where}: {kind!r} is not an Open Responses item"]
    found = fields(where, item, ITEMS[kind])
    if "status" in ITEMS[kind] and item.get("status") not in ITEM_STATUS:
        found.append(f"{where}.status: {item.get('status')!r}")
    for name in ("content", "summary"):
        for n, part in enumerate(item.get(name) or ()):
            found += part_problems(f"{where}.{name}[{n}]", part)
    return found


def resource_problems(resource: object, where: str = "response") -> list[str]:
    found = fields(where, resource, RESOURCE)
    if found[:1] == [f"{where}: not an object"]:
        return found
    if resource.get("object") != "response":
        found.append(f"{where}.object: {resource.get('object')!r}")
    if resource.get("truncation") not in ("auto", "disabled"):
        found.append(f"{where}.truncation: {resource.get('truncation')!r}")
    for n, item in enumerate(resource.get("output") or ()):
        found += item_problems(f"{where}.output[{n}]", item)
    for n, tool in enumerate(resource.get("tools") or ()):
        found += fields(f"{where}.tools[{n}]", tool, FUNCTION_TOOL)
    if isinstance(resource.get("text"), dict) and not isinstance(resource["text"].get("format"), dict):
        found.append(f"{where}.text: 'format' is required")
    if isinstance(resource.get("reasoning"), dict):
        found += fields(f"{where}.reasoning", resource["reasoning"], {"effort": (str, NULL), "summary": (str, NULL)})
    if isinstance(resource.get("usage"), dict):
        found += fields(f"{where}.usage", resource["usage"], USAGE)
        details = resource["usage"]
        found += fields(
            f"{where}.usage.input_tokens_details", details.get("input_tokens_details"), {"cached_tokens": int}
        )
        found += fields(
            f"{where}.usage.output_tokens_details", details.get("output_tokens_details"), {"reasoning_tokens": int}
        )
    if isinstance(resource.get("incomplete_details"), dict):
        found += fields(f"{where}.incomplete_details", resource["incomplete_details"], {"reason": str})
    if isinstance(resource.get("error"), dict):
        found += fields(f"{where}.error", resource["error"], {"code": str, "message": str})
    return found


def event_problems(event: object) -> list[str]:
    kind = event.get("type") if isinstance(event, dict) else None
    if kind not in EVENTS:
        return [f"event {kind!r}: not an Open Responses streaming event"]
    where = f"event {kind}"
    found = fields(where, event, {"type": str, "sequence_number": int, **EVENTS[kind]})
    if isinstance(event.get("response"), dict):
        found += resource_problems(event["response"], f"{where}.response")
    if isinstance(event.get("item"), dict):
        found += item_problems(f"{where}.item", event["item"])
    if isinstance(event.get("part"), dict):
        found += part_problems(f"{where}.part", event["part"])
    if kind == "error":
        found += fields(f"{where}.error", event.get("error"), ERROR_PAYLOAD)
    return found


def stream_problems(events: list[dict]) -> list[str]:
    """Every event valid, numbered 0, 1, 2, … in order, opened by `response.created` and closed by a
    terminal event, each delta naming the item that `output_item.added` opened at its index."""
    found = [p for event in events for p in event_problems(event)]
    numbers = [e.get("sequence_number") for e in events]
    if numbers != list(range(len(events))):
        found.append(f"sequence numbers {numbers}")
    if not events or events[0].get("type") != "response.created":
        found.append("the first event is not response.created")
    terminal = ("response.completed", "response.incomplete", "response.failed", "error")
    if not events or events[-1].get("type") not in terminal:
        found.append("the last event is not terminal")
    opened: dict[int, str] = {}
    for event in events:
        if event.get("type") == "response.output_item.added" and isinstance(event.get("item"), dict):
            opened[event["output_index"]] = event["item"].get("id")
        elif "item_id" in event and opened.get(event.get("output_index")) != event["item_id"]:
            found.append(f"event {event.get('type')} names item {event['item_id']!r}, not the one opened there")
    return found
