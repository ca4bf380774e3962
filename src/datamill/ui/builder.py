"""From the app's form to a datamill recipe: the same recipes, steps and engine as the CLI.

:class:`DatasetSpec` holds what a person chose (kind, technique, system prompt, rows, model,
sampling). :func:`build_recipe` turns it into a recipe mapping — the YAML the CLI runs, which the
app saves as ``recipe.yaml`` in the output folder so ``datamill run FOLDER/recipe.yaml`` repeats
the job — and :func:`build_pipeline` validates it through the recipe loader.

Instruction techniques (the user queries): ``magpie`` (arXiv:2406.08464), ``self_instruct``
(arXiv:2212.10560) and plain ``prompting`` (ask the model for one question, for endpoints without
raw-prompt support). Preference data adds a response pool, UltraFeedback ratings
(arXiv:2310.01377) and DPO formatting. The steps of each come from the built-in recipes
(``recipes/builtin``) when they are present, so the app and ``datamill recipes`` agree.
Verified data (kind ``verified``) is one of the built-in verified recipes (:data:`VERIFIED_RECIPES`)
as built in, on the chosen model, asking for the form's rows of verified answers.

Deliberately not here: running (``ui.jobs``), widgets (``ui.app``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..models.registry import is_spec
from ..pipeline.graph import Pipeline
from ..pipeline.topup import DEFAULT_ATTEMPTS_FACTOR
from ..recipes.yamlkeys import load_yaml
from ..steps.dpo import OUTPUTS as DPO_OUTPUTS
from ..tasks.self_instruct import request_tokens

KINDS = {
    "sft": "Instruction (SFT)",
    "dpo": "Preference (DPO, with ratings)",
    "verified": "Verified (SFT, answers checked by code)",
}
TECHNIQUES = {"magpie": "Magpie", "self_instruct": "SelfInstruct", "prompting": "Basic prompting"}
MODEL_SOURCES = {
    "embedded": "Embedded SmolLM2-135M",
    "gguf": "GGUF file",
    "openai": "OpenAI-compatible endpoint",
}

#: The built-in verified recipes the app offers (kind ``verified``): name → what is checked.
VERIFIED_RECIPES = {
    "math-verified": "Math: each solution's final answer checked against the reference",
    "code-verified": "Code: each Python function run against its asserts in a sandbox",
    "constraints": "Instruction following: each answer checked against its constraint",
}

#: Queries per context that SelfInstruct asks for (rows ≈ contexts × this).
SELF_INSTRUCT_PER_CONTEXT = 4
#: Tokens for one user query (Magpie's template sets its own); the form's max tokens are for answers.
QUERY_TOKENS = 96
#: The question the plain-prompting technique asks (the system prompt sets the domain).
PROMPTING_QUESTION = (
    "Write one question or request that a user of this assistant could send. "
    "Reply with the question only."
)


@dataclass
class DatasetSpec:
    """Everything the form decides about a dataset."""

    system_prompt: str
    kind: str = "sft"
    technique: str = "magpie"
    num_rows: int = 10
    model: Any = "llamacpp"  #: a spec string, a Model, or a mapping {spec: ..., option: ...}
    max_tokens: int = 256
    #: for writing user queries (responses use the task's default). Measured on 8 Magpie rows of
    #: the embedded 135M model: at 0.9 two of the three queries shown were noise, at 0.7 they read
    #: as questions. Either way about a quarter of the queries ramble without ending; a longer
    #: query budget does not save them (the same 2 of 8 were cut at 96 and at 128 tokens), so the
    #: Magpie recipe's 96 stays and the run tops up past them (``target_rows``).
    temperature: float = 0.7
    keep_truncated: bool = (
        False  #: keep answers cut at ``max_tokens`` (dropped and recorded otherwise)
    )
    description: str = ""
    name: str = "ui-dataset"
    seed: int = 0
    #: kind ``verified``: the built-in recipe run (a key of :data:`VERIFIED_RECIPES`); it brings
    #: its own prompts, so the system prompt, technique and query temperature do not apply
    recipe: str = ""

    def check(self) -> None:
        """One clear line for each thing a person can get wrong, before any model call."""
        if self.kind == "verified":
            if self.recipe not in VERIFIED_RECIPES:
                raise ConfigError(
                    f"choose a verified recipe: one of {', '.join(VERIFIED_RECIPES)}, got {self.recipe!r}"
                )
        elif not self.system_prompt or not self.system_prompt.strip():
            raise ConfigError(
                "the system prompt is empty: describe the dataset and draft one, or write it"
            )
        if self.kind not in KINDS:
            raise ConfigError(f"unknown dataset kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.technique not in TECHNIQUES:
            raise ConfigError(
                f"unknown technique {self.technique!r}: use one of {', '.join(TECHNIQUES)}"
            )
        if not isinstance(self.num_rows, int) or self.num_rows < 1:
            raise ConfigError(f"number of rows must be at least 1, got {self.num_rows}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 8:
            raise ConfigError(f"max tokens must be at least 8, got {self.max_tokens}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise ConfigError(f"temperature must be between 0 and 2, got {self.temperature}")


def model_spec(
    source: str, gguf_path: str = "", url: str = "", model_name: str = "", api_key_env: str = ""
) -> str | dict[str, Any]:
    """The model setting for the form's choice: ``llamacpp``, ``llamacpp:PATH``, ``openai:MODEL@URL``."""
    if source in ("embedded", MODEL_SOURCES["embedded"]):
        return "llamacpp"
    if source in ("gguf", MODEL_SOURCES["gguf"]):
        path = (gguf_path or "").strip()
        if not path:
            raise ConfigError("give the path of a .gguf file for the GGUF model")
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"GGUF file {p} does not exist")
        return f"llamacpp:{p}"
    if source in ("openai", MODEL_SOURCES["openai"]):
        url = (url or "").strip()
        name = (model_name or "").strip()
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint URL must start with http:// or https://, got {url!r}")
        if not name:
            raise ConfigError(
                "give the model name the endpoint serves (e.g. gpt-4o-mini or the vLLM model id)"
            )
        spec = f"openai:{name}@{url}"
        env = (api_key_env or "").strip()
        return {"spec": spec, "api_key_env": env} if env else spec
    if is_spec(source):
        return source  # a raw spec of a registered backend (tests, `datamill ui --model`)
    raise ConfigError(f"unknown model choice {source!r}: use one of {', '.join(MODEL_SOURCES)}")


# -- the recipe --------------------------------------------------------------------------------
#: The built-in recipes the app's datasets are cut from (``datamill recipes`` lists them).
TEMPLATE_RECIPES = {
    "magpie": "magpie",
    "self_instruct": "instructions-seeded",
    "dpo": "preferences-basic",
}


def template_recipe(name: str) -> dict[str, Any]:
    """A built-in recipe as a mapping (the app's template for one technique)."""
    from ..recipes.loader import builtin_recipes

    path = builtin_recipes().get(name)
    if path is None:
        raise ConfigError(
            f"the built-in recipe {name!r} is missing from this installation; reinstall datamill"
        )
    data = load_yaml(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise ConfigError(f"the built-in recipe {name!r} has no steps")
    return data


def _steps(
    recipe: dict[str, Any], patches: dict[str, dict[str, Any]], kinds: list[str]
) -> list[dict[str, Any]]:
    """The recipe's steps of ``kinds`` (in recipe order), each patched (a ``None`` value removes
    the parameter). A kind the recipe lacks is one clear error: the template changed."""
    out = []
    for item in recipe["steps"]:
        kind, params = next(iter(item.items()))
        if kind not in kinds:
            continue
        merged = {**copy.deepcopy(params or {}), **patches.get(kind, {})}
        out.append({kind: {k: v for k, v in merged.items() if v is not None}})
    missing = [k for k in kinds if k not in {next(iter(s)) for s in out}]
    if missing:
        raise ConfigError(
            f"the built-in recipe {recipe.get('name')!r} has no {missing[0]} step; the app cannot use it"
        )
    return out


def _instruction_part(
    spec: DatasetSpec, with_response: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Source and steps that end with ``instruction`` (and ``response`` when asked) columns."""
    cut = "keep" if spec.keep_truncated else None
    answer = {
        "text_generation": {
            "name": "answer",
            "template": "{{ instruction }}",
            "output": "response",
            "max_tokens": spec.max_tokens,
            **({"truncated": cut} if cut else {}),
        }
    }
    if spec.technique == "magpie":
        recipe = template_recipe(TEMPLATE_RECIPES["magpie"])
        magpie = {
            "system_prompt": spec.system_prompt,
            "include_system_prompt": True,
            "only_instruction": not with_response or None,
            "temperature": spec.temperature,
            "response_max_tokens": spec.max_tokens if with_response else None,
            "truncated": cut if with_response else None,
        }
        kinds = ["magpie", "filter_ends_with"] + (["filter_refusal"] if with_response else [])
        return {"num_rows": spec.num_rows}, _steps(recipe, {"magpie": magpie}, kinds)
    if spec.technique == "self_instruct":
        recipe = template_recipe(TEMPLATE_RECIPES["self_instruct"])
        per = min(SELF_INSTRUCT_PER_CONTEXT, spec.num_rows)
        context = spec.description.strip() or spec.system_prompt.strip()
        source = {
            "rows": [{"input": context, "system_prompt": spec.system_prompt}],
            "repeat": math.ceil(spec.num_rows / per),
        }
        patches: dict[str, dict[str, Any]] = {
            "self_instruct": {
                "num_instructions": per,
                "temperature": spec.temperature,
                "max_tokens": request_tokens(per),
            },
            "text_generation": {
                "template": "{{ instruction }}",
                "output": "response",
                "max_tokens": spec.max_tokens,
                "truncated": cut,
            },
        }
        kinds = ["self_instruct", "expand", "filter_self_instruct"] + (
            ["text_generation"] if with_response else []
        )
        return source, _steps(recipe, patches, kinds)
    if spec.technique == "prompting":
        source = {
            "num_rows": spec.num_rows,
            "fields": {"system_prompt": spec.system_prompt, "request": PROMPTING_QUESTION},
        }
        steps: list[dict[str, Any]] = [
            {
                "text_generation": {
                    "name": "query",
                    "template": "{{ request }}",
                    "output": "instruction",
                    "temperature": spec.temperature,
                    "max_tokens": QUERY_TOKENS,
                    "truncated": "keep",
                }
            },
        ]
        return source, steps + ([answer] if with_response else [])
    raise ConfigError(f"technique {spec.technique!r} is not available in this version of datamill")


def _with_spec(setting: Any, model: Any) -> Any:
    """A template's model setting pointed at the chosen model (its sampling kept)."""
    base = dict(model) if isinstance(model, dict) else {"spec": model}
    if isinstance(setting, dict):
        return {**{k: v for k, v in setting.items() if k != "spec"}, **base}
    return base if isinstance(model, dict) else model


SFT_COLUMNS = ["messages", "prompt_id", "system_prompt", "instruction", "response"]
#: the DPO pair's columns (``steps.dpo``), then what the pool and the judge wrote
DPO_COLUMNS = [
    *DPO_OUTPUTS,
    "generations",
    "generation_models",
    "ratings",
    "rationales",
    "system_prompt",
]


def build_recipe(spec: DatasetSpec) -> dict[str, Any]:
    """The recipe mapping for ``spec`` (what ``recipe.yaml`` in the output folder holds).

    It asks for ``spec.num_rows`` surviving rows (``target_rows``): rows lost to a filter or a
    truncated answer are made up by more source rows, up to :func:`attempt_cap` of them
    (``pipeline.topup``). SFT: the technique's built-in recipe (``magpie`` or ``instructions-seeded``) with the
    person's system prompt, row count and model. DPO: the technique's queries, then the pool,
    judge and pairing of ``preferences-basic``, every model setting pointed at the chosen model.
    """
    spec.check()
    if spec.kind == "verified":
        return _verified_recipe(spec)
    models: dict[str, Any] = {"default": spec.model}
    if spec.kind == "sft":
        source, steps = _instruction_part(spec, with_response=True)
        steps.append(
            {
                "format_sft": {
                    "instruction": "instruction",
                    "response": "response",
                    "system_prompt": "system_prompt",
                }
            }
        )
        steps.append({"keep": {"columns": SFT_COLUMNS}})
    else:
        source, steps = _instruction_part(spec, with_response=False)
        recipe = template_recipe(TEMPLATE_RECIPES["dpo"])
        for name, setting in recipe.get("models", {}).items():
            models[name] = _with_spec(setting, spec.model)
        patches: dict[str, dict[str, Any]] = {
            "response_pool": {
                "template": "{{ instruction }}",
                "max_tokens": spec.max_tokens,
                "truncated": "keep" if spec.keep_truncated else "drop",
            },
            "format_dpo": {"system_prompt": "system_prompt"},
        }
        steps += _steps(recipe, patches, ["response_pool", "ultrafeedback", "format_dpo"])
        steps.append({"keep": {"columns": DPO_COLUMNS}})
    description = spec.description.strip() or spec.system_prompt.strip()
    return {
        "name": spec.name,
        "description": f"{KINDS[spec.kind]} data made with the datamill app ({TECHNIQUES[spec.technique]}): {description}",
        "seed": spec.seed,
        "models": models,
        "source": source,
        "steps": steps,
        "target_rows": spec.num_rows,
        "max_attempts": attempt_cap(spec, spec.num_rows),
    }


def _verified_recipe(spec: DatasetSpec) -> dict[str, Any]:
    """The built-in verified recipe ``spec.recipe`` asking for ``spec.num_rows`` verified rows:
    its models pointed at the chosen model (their sampling kept), its answers' ``max_tokens``
    and truncation the form's, a generated source (``num_rows``) sized to the rows; a recipe with
    a fixed list of prompts cycles through them (``pipeline.topup``). Every other step as built in."""
    recipe = template_recipe(spec.recipe)
    cut = {"truncated": "keep"} if spec.keep_truncated else {}
    steps = []
    for item in recipe["steps"]:
        kind, params = next(iter(item.items()))
        if kind == "text_generation":
            params = {**(params or {}), "max_tokens": spec.max_tokens, **cut}
        steps.append({kind: copy.deepcopy(params)})
    source = copy.deepcopy(recipe.get("source") or {})
    if "num_rows" in source:
        source["num_rows"] = spec.num_rows
    models = {name: _with_spec(s, spec.model) for name, s in recipe.get("models", {}).items()}
    return {
        "name": spec.name,
        "description": f"{KINDS['verified']} data made with the datamill app, recipe {spec.recipe}: "
        + str(recipe.get("description", "")).strip(),
        "seed": spec.seed,
        "models": models or {"default": spec.model},
        "source": source,
        "steps": steps,
        "target_rows": spec.num_rows,
        "max_attempts": attempt_cap(spec, spec.num_rows),
    }


def build_pipeline(spec: DatasetSpec) -> Pipeline:
    """The validated pipeline for ``spec`` (the recipe loader checks every step)."""
    from ..recipes.loader import recipe_from_dict

    return recipe_from_dict(build_recipe(spec))


def source_rows(spec: DatasetSpec, rows: int) -> int:
    """Source rows that make about ``rows`` rows of ``spec``'s recipe when none is lost
    (a SelfInstruct source row is a context that yields several queries)."""
    if spec.technique == "self_instruct":
        return max(1, math.ceil(rows / min(SELF_INSTRUCT_PER_CONTEXT, spec.num_rows)))
    return max(1, rows)


def attempt_cap(spec: DatasetSpec, rows: int) -> int:
    """The most source rows tried to get ``rows`` surviving rows: ``DEFAULT_ATTEMPTS_FACTOR``
    times :func:`source_rows` (the top-up's own default factor, counted in source rows)."""
    return DEFAULT_ATTEMPTS_FACTOR * source_rows(spec, rows)


def preview_pipeline(spec: DatasetSpec, rows: int) -> tuple[Pipeline, int]:
    """The pipeline and source-row limit of a preview of ``rows`` rows of ``spec``'s recipe.

    The recipe *Generate* runs, cut to its first source rows and topped up (``pipeline.topup``,
    new rows keyed on from the last) until ``rows`` survive or :func:`attempt_cap` source rows
    were tried: the same keys as the full run's, so generating afterwards reuses every call.
    """
    pipeline = build_pipeline(spec)
    pipeline.target_rows = rows
    pipeline.max_attempts = attempt_cap(spec, rows)
    return pipeline, source_rows(spec, rows)


def recipe_yaml(recipe: dict[str, Any]) -> str:
    """The recipe as YAML, in recipe order; a model object (tests) is written as its name."""
    data = copy.deepcopy({k: v for k, v in recipe.items() if k != "models"})
    models = {}
    for name, m in recipe.get("models", {}).items():
        models[name] = (
            copy.deepcopy(m)
            if isinstance(m, (str, dict))
            else getattr(getattr(m, "info", None), "name", str(m))
        )
    ordered = {k: (models if k == "models" else data[k]) for k in recipe}
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)
