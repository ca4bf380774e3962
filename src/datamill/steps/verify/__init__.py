"""Verifier steps: checks of each row's content (``verified``, ``verification``; see ``base``).

- ``verify_math`` (:class:`VerifyMath`): a final answer against a reference, with math-verify
- ``verify_code`` (:class:`VerifyCode`): a program against its tests, in the sandbox
- ``verify_constraints`` (:class:`VerifyConstraints`): IFEval-style verifiable instructions
- ``verify_json`` (:class:`VerifyJSON`): JSON against a JSON Schema or a pydantic model
- ``verify_python`` (:class:`VerifyPython`): any ``module:function(row) -> bool | (bool, reason)``

Each module imports its library (math-verify, jsonschema, the sandbox, the constraints) only when
a row is checked, so importing datamill stays fast and works without the optional ones.
"""

from .base import Verdict, Verifier
from .code import VerifyCode
from .constraints import VerifyConstraints
from .json import VerifyJSON
from .math import VerifyMath
from .python import VerifyPython

__all__ = [
    "Verdict",
    "Verifier",
    "VerifyCode",
    "VerifyConstraints",
    "VerifyJSON",
    "VerifyMath",
    "VerifyPython",
]
