"""datamill: synthetic datasets for training language models — SFT and DPO data, offline by
default, streaming, and never losing finished work.

    from datamill import Pipeline, TextGeneration, FormatSFT
    p = Pipeline([TextGeneration(output="response", template="{{ instruction }}"), FormatSFT()],
                 source=[{"instruction": "What is synthetic data?"}])
    result = p.run("out/demo")
"""

from __future__ import annotations

from .errors import (
    BudgetExceeded,
    ConfigError,
    DatamillError,
    InputError,
    MissingDependency,
    ModelError,
    ModelUnavailable,
    OutputError,
    PipelineError,
)
from .models.base import Completion, Model, ModelInfo, Request
from .models.fake import FakeModel
from .models.registry import load_model
from .pipeline.cache import CallCache
from .pipeline.graph import ModelSettings, Pipeline
from .pipeline.run import RunResult
from .recipes.loader import load_recipe
from .steps.base import FunctionStep, GlobalStep, Step, step
from .steps.columns import Drop, Expand, Group, Keep, Rename
from .steps.format import FormatSFT
from .tasks.base import Task
from .tasks.text_generation import TextGeneration

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "CallCache",
    "Completion",
    "ConfigError",
    "DatamillError",
    "Drop",
    "Expand",
    "FakeModel",
    "FormatSFT",
    "FunctionStep",
    "GlobalStep",
    "Group",
    "InputError",
    "Keep",
    "MissingDependency",
    "Model",
    "ModelError",
    "ModelInfo",
    "ModelSettings",
    "ModelUnavailable",
    "OutputError",
    "Pipeline",
    "PipelineError",
    "Rename",
    "Request",
    "RunResult",
    "Step",
    "Task",
    "TextGeneration",
    "load_model",
    "load_recipe",
    "step",
]
