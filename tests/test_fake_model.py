"""The scripted fake model: deterministic text, and JSON that satisfies the schema it is sent."""

from __future__ import annotations

import asyncio
import json

import jsonschema

from datamill import FakeModel, Request

SCHEMAS = [
    {
        "type": "object",
        "properties": {
            "ratings": {
                "type": "array",
                "items": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
                "minItems": 3,
                "maxItems": 3,
            },
            "rationales": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 3,
                "maxItems": 3,
            },
        },
        "required": ["ratings", "rationales"],
    },
    {
        "type": "object",
        "properties": {
            "scores": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": 6},
                "minItems": 6,
                "maxItems": 6,
            }
        },
        "required": ["scores"],
    },
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "note": {"type": ["string", "null"]}},
    },
]


def generate(model: FakeModel, request: Request) -> list[str]:
    return [c.text for c in asyncio.run(model.generate(request))]


def test_json_schema_requests_get_valid_json_deterministically() -> None:
    model = FakeModel()
    for schema in SCHEMAS:
        request = Request.chat("judge these", json_schema=schema, max_tokens=8, n=2)
        texts = generate(model, request)
        for text in texts:
            jsonschema.validate(json.loads(text), schema)
        assert generate(FakeModel(), request) == texts


def test_plain_requests_differ_by_seed_and_are_cut_at_max_tokens() -> None:
    model = FakeModel()
    a = generate(model, Request.chat("hello", seed=1))[0]
    b = generate(model, Request.chat("hello", seed=2))[0]
    assert a != b and len(a.splitlines()) == 3
    [short] = asyncio.run(model.generate(Request.chat("hello", seed=1, max_tokens=3)))
    assert short.finish_reason == "length" and len(short.text.split()) == 3
    assert len(model.calls) == 3
