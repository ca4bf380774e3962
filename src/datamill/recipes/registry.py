"""Step kinds recipes may name → the classes that implement them. Imported only when used."""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from ..steps.base import Step

#: kind → "module:Class" (module relative to the datamill package)
STEP_KINDS: dict[str, str] = {
    # columns and formatting
    "keep": "steps.columns:Keep",
    "drop": "steps.columns:Drop",
    "rename": "steps.columns:Rename",
    "expand": "steps.columns:Expand",
    "group": "steps.columns:Group",
    "format_sft": "steps.format:FormatSFT",
    "format_dpo": "steps.dpo:FormatDPO",
    "format_reasoning_sft": "steps.reasoning:FormatReasoningSFT",
    # filters
    "filter_rouge": "steps.filters:RougeFilter",
    "filter_length": "steps.filters:LengthFilter",
    "filter_keywords": "steps.filters:KeywordFilter",
    "filter_ends_with": "steps.filters:EndsWithFilter",
    "filter_refusal": "steps.filters:RefusalFilter",
    "filter_self_instruct": "steps.filters:SelfInstructFilter",
    "reasoning_gates": "steps.reasoning:ReasoningGates",
    # instruction techniques
    "text_generation": "tasks.text_generation:TextGeneration",
    "self_instruct": "tasks.self_instruct:SelfInstruct",
    "magpie": "tasks.magpie:Magpie",
    "evol_instruct": "tasks.evol_instruct:EvolInstruct",
    # personas (PersonaHub) and SmolTalk-style tasks
    "text_to_persona": "tasks.personas:TextToPersona",
    "persona_to_persona": "tasks.personas:PersonaToPersona",
    "rewrite_text": "tasks.transform:RewriteText",
    "summarize": "tasks.transform:Summarize",
    "simulated_chat": "tasks.chat:SimulatedChat",
    # preference techniques
    "response_pool": "tasks.response_pool:ResponsePool",
    "evol_quality": "tasks.evol_quality:EvolQuality",
    "ultrafeedback": "tasks.ultrafeedback:UltraFeedback",
    "critique": "tasks.critique:CritiqueRewrite",
    "delta_pair": "tasks.delta:DeltaPair",
    # curation
    "evol_complexity": "tasks.evol_instruct:EvolComplexity",
    "complexity_scorer": "tasks.deita:ComplexityScorer",
    "quality_scorer": "tasks.deita:QualityScorer",
    "embed": "steps.embed:Embed",
    "classify": "tasks.classify:Classify",
    "deita_select": "steps.deita:DeitaSelect",
    "dedup_exact": "steps.dedup:ExactDedup",
    "dedup_minhash": "steps.dedup:MinHashDedup",
    "dedup_embedding": "steps.dedup:EmbeddingDedup",
    "decontaminate": "decontam.step:Decontaminate",
    "deita_score": "steps.deita:DeitaScore",
    "instruction_response": "steps.messages:InstructionResponse",
    # verifiers
    "verify_math": "steps.verify.math:VerifyMath",
    "verify_code": "steps.verify.code:VerifyCode",
    "verify_constraints": "steps.verify.constraints:VerifyConstraints",
    "verify_json": "steps.verify.json:VerifyJSON",
    "verify_python": "steps.verify.python:VerifyPython",
    # rejection sampling and verified data
    "select_verified": "steps.select:SelectVerified",
    "pair_verified": "steps.select:PairVerified",
    "math_problems": "steps.problems:MathProblems",
    "sample_constraints": "steps.problems:SampleConstraints",
    "split_tests": "steps.problems:SplitTests",
    # tool-calling data
    "tool_queries": "tasks.tool_calls:ToolQueries",
    "tool_calls": "tasks.tool_calls:ToolCalls",
    "verify_tool_semantics": "tasks.tool_calls:VerifyToolSemantics",
}


def step_class(kind: str) -> type[Step]:
    """The class of a step kind, or one clear error listing the known kinds."""
    target = STEP_KINDS.get(kind)
    if target is None:
        known = ", ".join(sorted(STEP_KINDS))
        raise ConfigError(f"unknown step {kind!r}; known steps: {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(f"datamill.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("datamill"):
            raise ConfigError(
                f"step {kind!r} is not available in this version of datamill"
            ) from None
        raise
    cls: type[Step] = getattr(module, class_name)
    return cls
