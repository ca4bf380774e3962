"""Train and measure: does the data help? (``datamill eval``, ``datamill compare``)

``datamill eval OUT [OUT2 …] --base MODEL`` LoRA-tunes the base on each dataset (SFT, or DPO for
preference pairs; TRL + PEFT), answers held-out items with the base and each tuned model, checks
every answer with datamill's verifiers and prints pass rates side by side with bootstrap
intervals on each difference. Modules: ``heldout`` (eval sets, overlap check), ``scoring``
(verdicts, bootstrap), ``hf`` (load/train/generate; torch & co imported there only), ``run``
(the order of work), ``results`` (``eval.json``, ``eval.png``, card section, tables).

Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from .results import EVAL_FILE, card_section, load, update_card
from .run import EvalOptions, evaluate

__all__ = ["EVAL_FILE", "EvalOptions", "card_section", "evaluate", "load", "update_card"]
