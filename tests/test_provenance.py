"""Licence and provenance: the licence table, licences read from GGUF files, model options, price
tables and dataset cards, the card's section and header, and ``run.json``'s ``provenance``.
(Pushing under a licence is tested in ``test_push.py``.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from datamill import licences
from datamill.cli import main
from datamill.licence_card import set_header_licence
from datamill.models.llamacpp import LlamaCppModel, embedded_model_path
from datamill.models.llamacpp_gguf import gguf_metadata
from datamill.provenance import BUILTIN_SEED_ROWS, card_licence, model_licence
from datamill.recipes.loader import recipe_from_dict

# -- the table ----------------------------------------------------------------------------------


def test_spellings_are_normalised_to_the_tables_ids() -> None:
    assert licences.normalize("Apache-2.0") == "apache-2.0"
    assert licences.normalize("apache 2.0") == "apache-2.0"
    assert licences.normalize("CC-BY-NC-4.0") == "cc-by-nc-4.0"
    assert licences.normalize("llama-3.1") == "llama3.1"
    assert licences.normalize(["mit", "apache-2.0"]) == "mit"
    assert licences.normalize(None) == licences.normalize("") == "unknown"
    assert licences.normalize("GPL-3.0") == "gpl-3.0"  # not in the table: kept as written
    assert licences.known("MIT") and not licences.known("gpl-3.0") and not licences.known("other")


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        ("apache-2.0", "cc-by-nc-4.0", True),
        ("mit", "apache-2.0", True),
        ("cc-by-4.0", "apache-2.0", True),
        ("cc-by-sa-4.0", "cc-by-sa-4.0", True),
        ("cc-by-sa-4.0", "apache-2.0", False),
        ("cc-by-nc-4.0", "apache-2.0", False),
        ("cc-by-nc-4.0", "cc-by-nc-sa-4.0", True),
        ("cc-by-nc-sa-4.0", "cc-by-nc-4.0", False),
        ("llama3.1", "llama3.1", True),
        ("llama3.1", "other", True),
        ("llama3.1", "mit", False),
        ("gemma", "apache-2.0", False),
        ("openrail", "openrail", True),
        ("openrail", "cc-by-4.0", False),
        ("unknown", "apache-2.0", True),  # not judged here: check() warns instead
    ],
)
def test_what_each_licence_allows(source: str, target: str, ok: bool) -> None:
    assert licences.allows(source, target) is ok


def test_the_default_licence_is_the_most_demanding_input_every_input_allows() -> None:
    assert licences.default_licence(["apache-2.0", "mit"]) == "apache-2.0"
    assert licences.default_licence(["apache-2.0", "cc-by-nc-4.0"]) == "cc-by-nc-4.0"
    assert licences.default_licence(["cc-by-4.0", "llama3.1"]) == "llama3.1"
    assert licences.default_licence(["cc-by-nc-4.0", "cc-by-nc-sa-4.0"]) == "cc-by-nc-sa-4.0"
    assert licences.default_licence(["llama3.1", "llama3.2"]) == "other"  # both allow other
    assert licences.default_licence(["apache-2.0", "unknown"]) == "unknown"
    assert licences.default_licence(["apache-2.0", "gpl-3.0"]) == "unknown"
    assert licences.default_licence(["cc-by-sa-4.0", "cc-by-nc-4.0"]) == "other"
    assert licences.conflicts(["cc-by-sa-4.0", "cc-by-nc-4.0"])
    assert not licences.conflicts(["cc-by-nc-4.0", "apache-2.0"])


def test_check_refuses_what_an_input_forbids_and_warns_about_unknown_inputs() -> None:
    verdict = licences.check(
        "Apache-2.0",
        [("model 'a'", "cc-by-nc-4.0"), ("input 'b'", "unknown"), ("input 'c'", "mit")],
    )
    assert len(verdict.refusals) == 1 and "model 'a' is cc-by-nc-4.0" in verdict.refusals[0]
    assert "cc-by-nc-4.0, cc-by-nc-sa-4.0" in verdict.refusals[0]
    assert len(verdict.warnings) == 1 and "input 'b' has an unknown licence" in verdict.warnings[0]
    assert licences.check("cc-by-nc-4.0", [("model 'a'", "cc-by-nc-4.0")]).refusals == []
    unlisted = licences.check("mit", [("model 'x'", "gpl-3.0")])
    assert unlisted.refusals == [] and "not in datamill's table" in unlisted.warnings[0]


# -- reading licences ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nc_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the embedded SmolLM2 GGUF whose ``general.license`` says cc-by-nc-4.0 (written
    with the ``gguf`` package; the weights are the same)."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(str(embedded_model_path()))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    out = tmp_path_factory.mktemp("gguf") / "smollm2-nc.gguf"
    writer = gguf.GGUFWriter(str(out), arch=arch, endianess=reader.endianess)
    new = {"general.license": MetadataDetails(gguf.GGUFValueType.STRING, "cc-by-nc-4.0")}
    copy_with_new_metadata(reader, writer, new, [])
    return out


def test_the_embedded_smollm2_gguf_says_apache_2(tmp_path: Path) -> None:
    assert gguf_metadata(embedded_model_path(), ["general.license"]) == {
        "general.license": "apache-2.0"
    }
    assert model_licence(LlamaCppModel()) == {
        "licence": "apache-2.0",
        "from": "GGUF general.license",
    }


def test_the_licence_is_read_from_a_gguf_copy_with_another_general_license(
    nc_gguf: Path,
) -> None:
    found = gguf_metadata(nc_gguf, ["general.license", "general.name", "no.such.key"])
    assert found == {"general.license": "cc-by-nc-4.0", "general.name": found["general.name"]}
    assert model_licence(LlamaCppModel(nc_gguf))["licence"] == "cc-by-nc-4.0"


def test_a_local_model_folders_card_gives_its_licence(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from datamill.models.registry import load_model

    (tmp_path / "README.md").write_text("---\nlicense: gemma\n---\n# a model\n")
    model = load_model(f"transformers:{tmp_path}")  # built, not loaded: no weights needed
    assert model_licence(model) == {
        "licence": "gemma",
        "from": f"model card {tmp_path / 'README.md'}",
    }
    model.info.extra["licence"] = "mit"  # the model option wins over the card
    assert model_licence(model)["licence"] == "mit"


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(ValueError, match="could not load"):
        gguf_metadata(bad, ["general.license"])
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(embedded_model_path().read_bytes()[:4096])
    with pytest.raises(ValueError, match="could not load"):
        gguf_metadata(cut, ["general.license"])


def test_card_licence_reads_the_yaml_header_only(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: CC-BY-4.0\npretty_name: x\n---\n# x\nlicense: mit\n")
    assert card_licence(card) == "cc-by-4.0"
    card.write_text("# a readme\n\nlicense: mit\n")
    assert card_licence(card) is None
    assert card_licence(tmp_path / "missing.md") is None


def test_set_header_licence_replaces_or_adds_the_key() -> None:
    card = "---\nconfigs: []\nlicense: mit\n---\n# title\n"
    new = set_header_licence(card, "cc-by-4.0")
    assert new.startswith("---\nlicense: cc-by-4.0\nconfigs: []\n---\n# title\n")
    assert set_header_licence("# title\n", "mit") == "---\nlicense: mit\n---\n# title\n"


# -- a run's provenance -------------------------------------------------------------------------


def _recipe(source: dict[str, Any], model: Any = "fake") -> dict[str, Any]:
    return {
        "name": "prov",
        "models": {"default": model},
        "source": source,
        "steps": [{"text_generation": {"output": "response"}}],
    }


def _run(tmp_path: Path, recipe: dict[str, Any], *args: str) -> tuple[dict[str, Any], str]:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    main(["run", str(path), "-o", str(out), "--quiet", *args])
    prov = json.loads((out / "run.json").read_text())["provenance"]
    return prov, (out / "README.md").read_text()


@pytest.fixture(autouse=True)
def no_user_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No price file of the machine's user decides a licence here."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DATAMILL_PRICES", raising=False)


def test_run_json_and_card_record_model_and_input_licences(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# seeds\n")
    (seeds / "rows.jsonl").write_text(
        "".join(json.dumps({"instruction": f"q{i}"}) + "\n" for i in range(3))
    )
    recipe = _recipe({"path": "seeds/rows.jsonl"}, {"spec": "fake", "licence": "CC-BY-NC-4.0"})
    prov, card = _run(tmp_path, recipe)
    assert prov["models"] == [
        {
            "name": "default",
            "model": "fake",
            "backend": "fake",
            "licence": "cc-by-nc-4.0",
            "from": "model option licence",
        }
    ]
    assert [(i["licence"], i["from"]) for i in prov["inputs"]] == [
        ("cc-by-4.0", f"dataset card {seeds / 'README.md'}")
    ]
    assert prov["licence"] == "cc-by-nc-4.0" and prov["conflict"] is False
    assert prov["recipe"]["name"] == "prov" and prov["recipe"]["builtin"] is False
    assert len(prov["recipe"]["sha256"]) == 64
    assert prov["datamill"] == __import__("datamill").__version__
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-nc-4.0"
    section = card[card.index("## Licence and provenance") :]
    assert "Licence of this dataset: **cc-by-nc-4.0**" in section
    assert "| model `default` | fake (fake) | cc-by-nc-4.0 | model option licence |" in section
    assert "| dataset | " in section and "| cc-by-4.0 | dataset card" in section
    assert "a guard, not legal advice" in section
    assert "- recipe: `prov` (own, sha256 " in section
    assert f"- made with datamill {prov['datamill']}" in section


def test_input_licence_option_wins_over_the_card_and_unknown_is_said_plainly(
    tmp_path: Path,
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"instruction": "q"}) + "\n")
    prov, card = _run(tmp_path, _recipe({"path": str(rows)}))
    assert prov["models"][0]["licence"] == "unknown" and prov["inputs"][0]["licence"] == "unknown"
    assert prov["licence"] == "unknown"
    assert "| fake (fake) | unknown | not stated anywhere datamill can read |" in card
    assert "the licence of at least one input is unknown" in card
    prov, card = _run(tmp_path, _recipe({"path": str(rows)}), "--input-licence", "MIT")
    assert prov["inputs"][0] == {"name": str(rows), "licence": "mit", "from": "--input-licence"}


def test_the_price_table_gives_an_api_models_licence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("fake: {licence: llama3.1}\ngpt-x: {input: 1, output: 2, licence: mit}\n")
    monkeypatch.setenv("DATAMILL_PRICES", str(prices))
    prov, card = _run(tmp_path, _recipe({"rows": [{"instruction": "q"}]}), "--input-licence", "mit")
    assert prov["models"][0]["licence"] == "llama3.1"
    assert prov["models"][0]["from"] == f"price table {prices}"
    assert prov["licence"] == "llama3.1"
    from datamill.pricing import PriceTable

    table = PriceTable.load(prices)
    assert table.licence("openai", "gpt-x") == "mit"
    assert table.for_spec("openai:gpt-x@https://api.example.com/v1") is not None
    assert table.licence("openai", "other-model") is None


def test_a_builtin_recipe_and_its_seed_rows_are_datamills(tmp_path: Path) -> None:
    out = tmp_path / "out"
    main(["run", "instructions-basic", "--model", "fake", "--limit", "2", "-o", str(out), "-q"])
    prov = json.loads((out / "run.json").read_text())["provenance"]
    assert prov["recipe"]["builtin"] is True
    assert prov["inputs"] == [
        {"name": "the built-in recipe's seed rows", "licence": "apache-2.0", "from": "datamill"}
    ]


def test_builtin_seed_rows_have_one_name_however_their_licence_is_known(tmp_path: Path) -> None:
    """With or without --input-licence, run.json, the card and a refused push name a built-in
    recipe's seed rows the same way (never "inline rows")."""
    from datamill.errors import ConfigError
    from datamill.licence_card import push_licence

    args = ["run", "instructions-basic", "--model", "fake", "--limit", "2", "-q"]
    labels = []
    for folder, extra in (("plain", []), ("given", ["--input-licence", "cc-by-nc-4.0"])):
        out = tmp_path / folder
        main([*args, *extra, "-o", str(out)])
        (entry,) = json.loads((out / "run.json").read_text())["provenance"]["inputs"]
        labels.append(entry["name"])
        card = (out / "README.md").read_text()
        assert f"| dataset | {BUILTIN_SEED_ROWS} | {entry['licence']} | {entry['from']} |" in card
        assert "inline rows" not in card
    assert labels == [BUILTIN_SEED_ROWS, BUILTIN_SEED_ROWS]
    assert entry == {
        "name": BUILTIN_SEED_ROWS,
        "licence": "cc-by-nc-4.0",
        "from": "--input-licence",
    }
    with pytest.raises(ConfigError) as err:
        push_licence(tmp_path / "given", "apache-2.0", None, write=False)
    assert BUILTIN_SEED_ROWS in str(err.value) and "inline rows" not in str(err.value)


def test_a_recipes_licence_option_does_not_follow_model_override(tmp_path: Path) -> None:
    recipe = _recipe({"rows": [{"instruction": "q"}]}, {"spec": "fake", "licence": "mit"})
    prov, _ = _run(tmp_path, recipe, "--model", "fake:other")
    assert prov["models"][0]["model"] == "other" and prov["models"][0]["licence"] == "unknown"


def test_the_licence_model_option_is_checked_like_other_options() -> None:
    pipeline = recipe_from_dict(
        _recipe({"rows": [{"instruction": "q"}]}, {"spec": "fake", "licence": "mit"})
    )
    assert pipeline.models["default"].options == {"licence": "mit"}


@pytest.mark.real
def test_a_run_on_a_non_commercial_gguf_cannot_be_pushed_as_apache(
    nc_gguf: Path, tmp_path: Path
) -> None:
    from datamill import push_to_hub
    from datamill.errors import ConfigError

    recipe = _recipe(
        {"rows": [{"instruction": "Reply with one word: name a colour."}]}, f"llamacpp:{nc_gguf}"
    )
    recipe["steps"] = [{"text_generation": {"output": "response", "max_tokens": 160}}]
    prov, card = _run(tmp_path, recipe)
    assert prov["models"][0]["licence"] == "cc-by-nc-4.0"
    assert prov["models"][0]["from"] == "GGUF general.license"
    assert yaml.safe_load(card.split("---\n")[1])["license"] == "unknown"  # inline rows: unknown
    with pytest.raises(ConfigError, match=r"cannot push as apache-2\.0: model 'default'"):
        push_to_hub(tmp_path / "out", "org/x", license="apache-2.0")


def test_a_datamill_output_used_as_input_passes_its_licence_on(tmp_path: Path) -> None:
    first = _recipe({"rows": [{"instruction": "q"}]}, {"spec": "fake", "licence": "cc-by-nc-4.0"})
    _run(tmp_path, first, "--input-licence", "mit")
    (tmp_path / "out").rename(tmp_path / "made")
    second = _recipe({"path": "made"}, {"spec": "fake", "licence": "apache-2.0"})
    second["steps"] = [{"text_generation": {"template": "{{ response }}", "output": "again"}}]
    prov, card = _run(tmp_path, second)
    assert prov["inputs"] == [
        {
            "name": str(tmp_path / "made" / "data"),
            "licence": "cc-by-nc-4.0",
            "from": f"dataset card {tmp_path / 'made' / 'README.md'}",
        }
    ]
    assert prov["licence"] == "cc-by-nc-4.0"
