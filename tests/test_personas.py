"""Personas (PersonaHub): text-to-persona, persona-to-persona, near-duplicate removal, the
offline persona sampler read by templates; on the scripted fake model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datamill import FakeModel, ModelSettings
from datamill.models.base import Request
from datamill.pipeline.graph import Pipeline
from datamill.recipes.loader import load_recipe
from datamill.tasks.personas import PersonaToPersona, TextToPersona

TEXTS = [
    {"text": "Drip irrigation delivers water to the roots through thin tubes and saves water."},
    {"text": "The quarterly results beat expectations as revenue rose eight percent."},
    {"text": "Tonight's lesson covers fractions: cut a pizza into eight equal slices."},
]


def on_model(p: Pipeline, model: Any) -> Pipeline:
    p.models = {n: ModelSettings(spec=model, sampling=s.sampling) for n, s in p.models.items()}
    return p


def prompt(request: Request) -> str:
    return str(request.messages[-1]["content"])


def test_text_to_persona_asks_who_would_read_it_and_cleans_the_answer(tmp_path: Path) -> None:
    def answer(request: Request, index: int) -> str:
        text = prompt(request)
        if "pizza" in text:
            return (
                "Persona: Tonight's lesson covers fractions: cut a pizza into eight equal slices."
            )
        if "revenue" in text:
            return "An investor."
        return "Here is the persona:\n**Persona:** A market gardener in Spain who grows tomatoes on a dry hillside."

    model = FakeModel(answer)
    p = on_model(Pipeline([TextToPersona(max_tokens=64)], source=TEXTS), model)
    result = p.run(tmp_path / "out")
    assert [r["persona"] for r in result.rows] == [
        "A market gardener in Spain who grows tomatoes on a dry hillside."
    ]
    failures = json.loads((tmp_path / "out" / "run.json").read_text())["failures"]
    assert failures == {
        "persona copies its source": 1,
        "persona too short (< 5 words)": 1,
    }
    asked = [prompt(c) for c in model.calls]
    assert all(t["text"] in a for t, a in zip(TEXTS, asked, strict=True))
    assert all(
        any(
            f"Who is likely to {rel} the text above?" in a
            for rel in ("read", "write", "like", "dislike")
        )
        for a in asked
    )


def test_persona_to_persona_expands_each_persona_into_related_ones(tmp_path: Path) -> None:
    source = "A retired nurse who volunteers at a food bank in Leeds."

    def answer(request: Request, index: int) -> str:
        return (
            "Here are three people:\n"
            "1. A food-bank coordinator who schedules the volunteers every week.\n"
            "2. A young doctor the nurse once trained on the night ward.\n"
            "- A young doctor the nurse once trained on the night ward.\n"  # repeated: once
            "3. Her son.\n"  # too short
            f"4. {source}\n"  # the source itself: left out
            "5. A neighbour who drives her to the"  # cut at max_tokens: unfinished
        )

    from datamill.models.base import Completion

    model = FakeModel(lambda r, i: Completion(answer(r, i), finish_reason="length"))
    step = PersonaToPersona(num_personas=3, truncated="keep")
    result = on_model(Pipeline([step], source=[{"persona": source}]), model).run(tmp_path / "o")
    assert [(r["persona"], r["persona_source"]) for r in result.rows] == [
        (source, None),
        ("A food-bank coordinator who schedules the volunteers every week.", source),
        ("A young doctor the nurse once trained on the night ward.", source),
    ]
    assert "Describe 3 different such people" in prompt(model.calls[0])
    alone = PersonaToPersona(keep_source=False, truncated="keep")
    rows = on_model(Pipeline([alone], source=[{"persona": source}]), model).run(tmp_path / "p").rows
    assert [r["persona_source"] for r in rows] == [source, source]


def test_personas_recipe_removes_near_duplicate_personas(tmp_path: Path) -> None:
    def answer(request: Request, index: int) -> str:
        text = prompt(request)
        if "close relationship" in text:
            return (
                "A school librarian who runs a weekly reading club for teenagers.\n"
                "A bus driver who has driven the same route through town for twenty years."
            )
        return "A school librarian who runs a weekly reading club for teenage pupils."

    p = on_model(load_recipe("personas"), FakeModel(answer))
    result = p.run(tmp_path / "out", limit=3)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    personas = [r["persona"] for r in result.rows]
    # 3 texts → 3 personas (all near-identical), each → itself + 2 related: 9 before dedup
    assert run["steps"]["persona_to_persona"]["rows_out"] == 9
    assert len(personas) == 2 and len(set(personas)) == 2
    assert any("bus driver" in x for x in personas)
    assert run["steps"]["dedup_minhash"]["rows_out"] == 2


def test_instructions_personas_conditions_each_question_on_its_sampled_persona(
    tmp_path: Path,
) -> None:
    model = FakeModel()
    p = on_model(load_recipe("instructions-personas"), model)
    result = p.run(tmp_path / "out", limit=4)
    assert len(result.rows) == 4
    systems = [str(c.messages[0]["content"]) for c in model.calls if len(c.messages) == 2]
    assert len(systems) == 4
    for row in result.rows:
        assert any(f"The person: {row['persona']} Reply" in s for s in systems)
        assert row["messages"][0]["content"] == row["question"]
    assert len({r["persona"] for r in result.rows}) == 4
