"""The distilabel 1.5.3 virtualenv the benchmarks share (bench/.venv-distilabel).

Each benchmark asks for the packages it needs beside distilabel; what is already installed is
left as it is, so the engine and endpoint benches can fill the same venv in either order.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DISTILABEL_VENV = Path(__file__).resolve().parent / ".venv-distilabel"
DISTILABEL_PY = DISTILABEL_VENV / "bin" / "python"


def ensure_distilabel_venv(packages: list[str], imports: list[str]) -> None:
    """Create the venv if missing and pip-install distilabel 1.5.3 with ``packages`` unless
    ``imports`` (module names) already import there with distilabel at 1.5.3."""
    if not DISTILABEL_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DISTILABEL_VENV)], check=True)
    check = f"import distilabel, {', '.join(imports)}; assert distilabel.__version__ == '1.5.3'"
    if subprocess.run([str(DISTILABEL_PY), "-c", check], capture_output=True).returncode == 0:
        return
    print(f"setting up {DISTILABEL_VENV} (distilabel 1.5.3, {', '.join(packages)}) ...", flush=True)
    subprocess.run(
        [str(DISTILABEL_PY), "-m", "pip", "install", "-q", "distilabel==1.5.3", *packages],
        check=True,
    )
