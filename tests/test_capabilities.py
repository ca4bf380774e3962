"""Backends declare what they can do (``Capabilities``) and what they take (``Options``); nothing
else in the tree decides by a backend's name."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import datamill
from datamill import FakeModel, Pipeline, TextGeneration
from datamill.errors import ConfigError
from datamill.executors.ray import RayExecutor
from datamill.models.base import BackendOptions, Capabilities, ModelInfo
from datamill.models.registry import BACKENDS, backend_class, check_options
from datamill.pipeline.assembly import ShardJob, build_models
from datamill.pipeline.graph import ModelSettings
from datamill.pipeline.plan import plan_pipeline
from datamill.pricing import FREE, Price, PriceTable
from datamill.recipes.loader import load_recipe

SRC = Path(datamill.__file__).parent
#: a spec of each registered backend that builds without weights or a server
SPECS = {
    "anthropic": "anthropic:claude-x@http://127.0.0.1:9",
    "fake": "fake",
    "llamacpp": "llamacpp",
    "openai": "openai:m@http://127.0.0.1:9/v1",
    "transformers": "transformers:some/model",
    "vllm": "vllm:some/model",
}


def test_every_registered_backend_has_a_buildable_spec_here() -> None:
    assert set(SPECS) == set(BACKENDS)


# -- every backend declares every capability ------------------------------------------------------


def test_capabilities_have_no_defaults_to_fall_back_on() -> None:
    for f in dataclasses.fields(Capabilities):
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name
    with pytest.raises(TypeError):
        Capabilities(local=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError):  # a ModelInfo states its backend's capabilities
        ModelInfo(name="m", identity="m")  # type: ignore[call-arg]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_each_backend_class_declares_its_own_capabilities_and_options(backend: str) -> None:
    cls = backend_class(backend)
    assert "CAPABILITIES" in vars(cls), f"{backend} inherits its capabilities instead of declaring"
    caps = cls.capabilities()
    assert isinstance(caps, Capabilities)
    for f in dataclasses.fields(Capabilities):
        value = getattr(caps, f.name)
        if f.name == "structured":
            assert isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        elif f.name == "threads_option":
            assert value is None or value in cls.Options.model_fields
        else:
            assert isinstance(value, bool), (backend, f.name, value)
    assert cls.Options is not BackendOptions and issubclass(cls.Options, BackendOptions)
    assert cls.Options.model_config.get("extra") == "forbid"
    undocumented = [n for n, f in cls.Options.model_fields.items() if not f.description]
    assert undocumented == [], f"{backend} options without a docstring: {undocumented}"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_built_model_carries_its_backends_capabilities(backend: str) -> None:
    from datamill.models.registry import load_model

    model = load_model(SPECS[backend])
    caps = model.info.capabilities
    declared = type(model).capabilities()
    assert caps == declared
    assert caps.raw_prompt == model.info.raw_prompt
    assert bool(caps.structured) == model.info.json_schema or backend == "transformers"


def test_an_instance_switch_narrows_the_declared_capability() -> None:
    from datamill.models.openai import OpenAIModel

    chat_only = OpenAIModel("m", "http://127.0.0.1:9/v1", raw_prompt=False)
    assert OpenAIModel.capabilities().raw_prompt
    assert not chat_only.info.capabilities.raw_prompt and not chat_only.info.raw_prompt


# -- nothing decides by a backend's name ----------------------------------------------------------

#: (file, function, name) where a registered name is compared for a reason other than picking
#: a backend's behaviour; each says why
ALLOWED = {
    # embedder specs (minilm, st:PATH, openai:MODEL@URL, hash) are their own namespace
    ("models/embeddings.py", "load_embedder", "openai"),
    ("models/embeddings.py", "check_embedder_spec", "openai"),
    # the *remote server's* own report (llama-cpp-python's server serves any model name)
    ("models/openai.py", "_probe", "llamacpp"),
    # the app form's model choice ("embedded", "gguf", "openai"), turned into a spec there
    ("ui/builder.py", "model_spec", "openai"),
    # `datamill eval --base llamacpp`: the embedded GGUF named by its run spec; transformers
    # loads it, no backend is picked
    ("evaluate/hf.py", "resolve_base", "llamacpp"),
}


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _strings(e)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
        return _strings(node.args[0])  # frozenset({...}), set([...]), tuple((...))
    return []


def name_tests(source: str, names: set[str]) -> list[tuple[int, str | None, str]]:
    """(line, enclosing function, what) for each comparison of a value against a name in
    ``names``: ``==``/``!=``/``in``, ``startswith``/``endswith``, and collections of two or
    more such names bound to a variable (``GPU_BACKENDS = ("vllm", ...)``)."""
    tree = ast.parse(source)
    found: list[tuple[int, str | None, str]] = []

    def visit(node: ast.AST, func: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        hit: list[str] = []
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                hit += [s for s in _strings(side) if s in names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith")
        ):
            hit += [s for a in node.args for s in _strings(a) if s in names]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            named = [s for s in _strings(node.value) if s in names]
            if len(named) >= 2 and not isinstance(node.value, ast.Constant):
                hit += named
        if hit:
            found.append((getattr(node, "lineno", 0), func, ", ".join(sorted(set(hit)))))
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(tree, None)
    return found


def test_the_name_detector_finds_each_kind_of_name_test() -> None:
    snippet = (
        "GPU_BACKENDS = ('vllm', 'transformers')\n"
        "def f(spec, model):\n"
        "    if spec.split(':', 1)[0] == 'llamacpp': pass\n"
        "    if model.backend in ('openai',): pass\n"
        "    if spec.startswith(('fake', 'vllm')): pass\n"
        "    if 'openai' != model.backend: pass\n"
        "    x = {'openai': 1}\n"  # a mapping keyed by a name decides nothing by itself
    )
    lines = [line for line, _, _ in name_tests(snippet, set(BACKENDS))]
    assert lines == [1, 3, 4, 5, 6]


def test_no_code_outside_the_registry_tests_a_backend_name() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "models/registry.py":
            continue
        for line, func, what in name_tests(path.read_text(encoding="utf-8"), set(BACKENDS)):
            if (rel, func, what) not in ALLOWED:
                offenders.append(f"{rel}:{line} ({func}): compares against {what}")
    assert offenders == [], "decide by Capabilities, not backend names:\n" + "\n".join(offenders)


# -- options: typed, bounded, unknown keys refused in one line -----------------------------------


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_each_backend_refuses_an_unknown_option_in_one_line(backend: str) -> None:
    label = f"model 'default' ({backend})"
    with pytest.raises(ConfigError) as info:
        check_options(SPECS[backend], {"temprature": 1}, label)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"{label}: unknown option 'temprature' (did you mean 'temperature'?); allowed: "
    )
    allowed = message.split("allowed: ", 1)[1].split(", ")
    cls = backend_class(backend)
    # the backend's own options, the spec's keys, the sampling settings a model may carry
    # (max_tokens … the thinking switch) and the options every backend takes (think_tags, batch,
    # licence: the licence of its outputs, for the card's provenance)
    assert set(allowed) == {*cls.Options.model_fields, *cls.SPEC_KEYS} | {
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "enable_thinking",
        "reasoning_effort",
        "think_tags",
        "licence",
        "batch",
    }
    # the keyword constructors validate through the same Options
    with pytest.raises(ConfigError, match=rf"^{backend}: unknown option 'colour'; allowed: "):
        from datamill.models.registry import load_model

        load_model(SPECS[backend], colour="red")


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        (
            "llamacpp",
            {"batch_size": 0},
            "option 'batch_size' should be greater than or equal to 1, got 0",
        ),
        ("llamacpp", {"min_p": 2}, "option 'min_p' should be less than or equal to 1, got 2"),
        ("fake", {"latency": -1}, "option 'latency' should be greater than or equal to 0, got -1"),
        (
            "openai:m@http://h/v1",
            {"max_retries": -1},
            "option 'max_retries' should be greater than or equal to 0",
        ),
        ("openai:m@http://h/v1", {"schema_format": "xml"}, "option 'schema_format' should be "),
        (
            "openai:m@http://h/v1",
            {"min_concurrency": 9, "max_concurrency": 4},
            "options needs 1 <= min_concurrency <= max_concurrency, got 9 and 4",
        ),
        (
            "transformers:x",
            {"dtype": "int3"},
            "option 'dtype' should be 'auto', 'float32', 'float16' or 'bfloat16', got 'int3'",
        ),
        (
            "vllm:x",
            {"gpu_memory_utilization": 1.5},
            "option 'gpu_memory_utilization' should be less than or equal to 1, got 1.5",
        ),
    ],
)
def test_a_bad_option_value_is_one_line_naming_the_option(
    spec: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        check_options(spec, options, "model 'm'")
    assert str(info.value) == f"model 'm': {message}" or str(info.value).startswith(
        f"model 'm': {message}"
    )
    assert "\n" not in str(info.value)


def test_a_value_written_under_an_unknown_key_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        check_options("openai:m@http://h/v1", {"api_key": "sk-do-not-show"})
    assert "api_key" in str(info.value) and "sk-do-not-show" not in str(info.value)


def test_keyword_constructors_still_take_their_options() -> None:
    from datamill.models.openai import OpenAIModel

    model = OpenAIModel("m", "http://127.0.0.1:9/v1", timeout=5, max_concurrency=3, name="x")
    assert (model.timeout, model.limiter.maximum, model.info.name) == (5.0, 3, "x")
    fake = FakeModel(None, name="n", max_concurrency=2)
    assert (fake.info.name, fake.info.max_concurrency) == ("n", 2)


def test_a_recipe_with_a_misspelt_model_option_is_refused_at_its_line(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: t\nmodels:\n  default:\n    spec: openai:m@http://127.0.0.1:9/v1\n"
        "    temprature: 1\nsource:\n  rows: [{instruction: a}]\n"
        "steps:\n  - text_generation: {output: answer}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe)
    message = str(info.value)
    assert message.startswith(
        "r.yaml:5: model 'default' (openai): unknown option 'temprature' (did you mean 'temperature'?); allowed: "
    ) or message.startswith(
        f"{recipe}:5: model 'default' (openai): unknown option 'temprature' (did you mean 'temperature'?); allowed: "
    ), message
    assert "\n" not in message
    # the sampling keys stay model settings
    recipe.write_text(recipe.read_text().replace("temprature", "temperature"), encoding="utf-8")
    pipeline = load_recipe(recipe)
    assert pipeline.models["default"].sampling == {"temperature": 1}


# -- decisions go through the capabilities --------------------------------------------------------


class Hosted(FakeModel):
    """A scripted model that says it is a paid API (whatever its backend name)."""

    CAPABILITIES = replace(FakeModel.CAPABILITIES, local=False)


class OnThisMachine(FakeModel):
    """A scripted model under an unregistered name that says it runs here."""

    backend = "somecloud"


def test_pricing_frees_what_declares_itself_local() -> None:
    table = PriceTable(user={}, defaults={"fake": Price(1.0, 1.0), "somecloud": Price(1, 1)})
    for backend, spec in SPECS.items():
        local = backend_class(backend).capabilities().local
        assert (table.for_spec(spec) == FREE) == local or "127.0.0.1" in spec, spec
    assert table.for_model(OnThisMachine()) == FREE  # the name is nobody's: the capability is
    assert table.for_model(Hosted()) == Price(1.0, 1.0)  # the defaults' price of "fake"
    assert PriceTable(user={}, defaults={}).for_model(Hosted()) is None
    # a user's price still wins over "local"
    assert PriceTable(user={"fake": Price(2, 2)}).for_model(FakeModel()) == Price(2, 2)


def _pipeline(model: FakeModel) -> Pipeline:
    return Pipeline(
        [TextGeneration(output="answer", max_tokens=8)],
        source=[{"instruction": f"q {i}"} for i in range(4)],
        models={"default": model},
    )


def test_plan_prices_a_local_model_at_nothing_and_a_hosted_one_as_unknown() -> None:
    prices = PriceTable(user={}, defaults={})
    assert plan_pipeline(_pipeline(OnThisMachine()), preview_rows=2, prices=prices).cost == 0
    assert plan_pipeline(_pipeline(Hosted()), preview_rows=2, prices=prices).cost is None


def test_ray_reserves_a_gpu_only_for_a_backend_that_declares_one() -> None:
    def job(**models: Any) -> ShardJob:
        return ShardJob({k: ModelSettings.parse(v) for k, v in models.items()}, None)

    assert job(a="vllm:some/model").needs_gpu()
    assert not job(a="fake", b="llamacpp", c="transformers:x", d="openai:m@http://h/v1").needs_gpu()

    class OnGpu(FakeModel):
        CAPABILITIES = replace(FakeModel.CAPABILITIES, gpu=True)

    assert job(a="fake", b=OnGpu()).needs_gpu()  # model objects by their info
    executor = RayExecutor()
    executor.job = job(a="fake", b="vllm:x")
    assert executor._gpus() == 1.0
    executor.job = job(a="fake")
    assert executor._gpus() == 0.0
    pinned = RayExecutor(gpus_per_worker=0.5)
    pinned.job = job(a="fake")
    assert pinned._gpus() == 0.5


def test_a_workers_thread_share_goes_to_the_backend_that_declares_a_threads_option() -> None:
    built = build_models(
        {"a": ModelSettings.parse("llamacpp"), "b": ModelSettings.parse("fake")}, threads=3
    )
    assert built["a"][0].n_threads == 3  # type: ignore[attr-defined]
    # the fake declares no threads option (it would refuse n_threads if it were handed one)
    assert FakeModel.capabilities().threads_option is None and "b" in built
    kept = build_models({"a": ModelSettings.parse({"spec": "llamacpp", "n_threads": 1})}, threads=3)
    assert kept["a"][0].n_threads == 1  # type: ignore[attr-defined]


def test_with_model_the_options_are_checked_against_the_model_that_replaces_the_specs(
    tmp_path: Path,
) -> None:
    """``--model`` replaces every spec: an option of that backend is fine, one of the recipe's
    own backend (which will not run) is refused at its line."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: t\nmodels:\n  default: {spec: fake, backoff: 0}\nsource:\n  rows: [{instruction: a}]\n"
        "steps:\n  - text_generation: {output: answer}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"model 'default' \(fake\): unknown option 'backoff'"):
        load_recipe(recipe)
    pipeline = load_recipe(recipe, model="openai:m@http://127.0.0.1:9/v1")
    assert pipeline.models["default"].options == {"backoff": 0}
    with pytest.raises(
        ConfigError, match=r"model 'default' \(llamacpp\): unknown option 'backoff'"
    ):
        load_recipe(recipe, model="llamacpp")


def test_a_python_pipeline_with_a_misspelt_option_is_refused_before_any_model_is_built(
    tmp_path: Path,
) -> None:
    pipeline = Pipeline(
        [TextGeneration(output="answer", max_tokens=8, model="judge")],
        source=[{"instruction": "q"}],
        models={"judge": {"spec": "fake", "latncy": 0.1}},
    )
    with pytest.raises(ConfigError) as info:
        pipeline.run(tmp_path / "o", progress=False)
    assert str(info.value).startswith(
        "model 'judge' (fake): unknown option 'latncy' (did you mean 'latency'?); allowed: "
    )
    assert "\n" not in str(info.value)
