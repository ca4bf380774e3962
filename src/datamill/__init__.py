"""datamill: synthetic datasets for training language models — SFT and DPO data, offline by
default, streaming, and never losing finished work.

    from datamill import Pipeline, TextGeneration, FormatSFT
    p = Pipeline([TextGeneration(output="response", template="{{ instruction }}"), FormatSFT()],
                 source=[{"instruction": "What is synthetic data?"}])
    result = p.run("out/demo")

The same from a notebook (``run`` works where an event loop already runs; ``await p.arun()``
too), with a check, a preview, a forecast and a budget::

    p.check()                                   # column flow; no model call
    p.preview(2).rows                           # two source rows end to end, nothing written
    print(p.plan())                             # calls, tokens, time and cost, from a preview
    result = p.run("out/demo", budget=Budget(max_total_tokens=20_000, deadline="10m"))
    ds = result.to_dataset()                    # a datasets.Dataset
    push_to_hub("out/demo", "my-org/demo")      # parquet, card and report to the Hub

``examples/*.ipynb`` hold the smol-course exercises as notebooks.
"""

from __future__ import annotations

from .decontam.step import Decontaminate
from .errors import (
    BudgetExceeded,
    CacheError,
    ConfigError,
    DatamillError,
    InputError,
    MissingDependency,
    ModelError,
    ModelUnavailable,
    OutputError,
    PipelineError,
)
from .io.hub import Pushed, push_to_hub
from .models.base import BackendOptions, Capabilities, Completion, Model, ModelInfo, Request
from .models.embeddings import load_embedder
from .models.fake import FakeModel
from .models.registry import load_model
from .pipeline.budget import Budget
from .pipeline.cache import CallCache
from .pipeline.graph import ModelSettings, Pipeline
from .pipeline.plan import Forecast
from .pipeline.run import RunResult
from .pricing import Price, PriceTable
from .recipes.loader import load_recipe
from .steps.base import FunctionStep, GlobalStep, Step, step
from .steps.columns import Drop, Expand, Group, Keep, Rename
from .steps.dedup import EmbeddingDedup, ExactDedup, MinHashDedup
from .steps.deita import DeitaScore, DeitaSelect
from .steps.dpo import FormatDPO
from .steps.embed import Embed
from .steps.filters import SelfInstructFilter
from .steps.format import FormatSFT
from .steps.messages import InstructionResponse
from .steps.verify import (
    Verifier,
    VerifyCode,
    VerifyConstraints,
    VerifyJSON,
    VerifyMath,
    VerifyPython,
)
from .tasks.base import Task
from .tasks.classify import Classify
from .tasks.critique import CritiqueRewrite
from .tasks.deita import ComplexityScorer, QualityScorer
from .tasks.delta import DeltaPair
from .tasks.evol_instruct import EvolComplexity, EvolInstruct
from .tasks.evol_quality import EvolQuality
from .tasks.magpie import Magpie
from .tasks.response_pool import ResponsePool
from .tasks.self_instruct import SelfInstruct
from .tasks.text_generation import TextGeneration
from .tasks.ultrafeedback import UltraFeedback

__version__ = "0.1.0"

__all__ = [
    "BackendOptions",
    "Budget",
    "BudgetExceeded",
    "CacheError",
    "CallCache",
    "Capabilities",
    "Classify",
    "Completion",
    "ComplexityScorer",
    "ConfigError",
    "CritiqueRewrite",
    "DatamillError",
    "Decontaminate",
    "DeitaScore",
    "DeitaSelect",
    "DeltaPair",
    "Drop",
    "Embed",
    "EmbeddingDedup",
    "EvolComplexity",
    "EvolInstruct",
    "EvolQuality",
    "ExactDedup",
    "Expand",
    "FakeModel",
    "Forecast",
    "FormatDPO",
    "FormatSFT",
    "FunctionStep",
    "GlobalStep",
    "Group",
    "InputError",
    "InstructionResponse",
    "Keep",
    "Magpie",
    "MinHashDedup",
    "MissingDependency",
    "Model",
    "ModelError",
    "ModelInfo",
    "ModelSettings",
    "ModelUnavailable",
    "OutputError",
    "Pipeline",
    "PipelineError",
    "Price",
    "PriceTable",
    "Pushed",
    "QualityScorer",
    "Rename",
    "Request",
    "ResponsePool",
    "RunResult",
    "SelfInstruct",
    "SelfInstructFilter",
    "Step",
    "Task",
    "TextGeneration",
    "UltraFeedback",
    "Verifier",
    "VerifyCode",
    "VerifyConstraints",
    "VerifyJSON",
    "VerifyMath",
    "VerifyPython",
    "load_embedder",
    "load_model",
    "load_recipe",
    "push_to_hub",
    "step",
]
