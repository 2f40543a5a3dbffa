"""Helpers of benchmarks/kernels.py (see benchmarks/README.md).

This checkout's device/ and host_tools/ come first on sys.path, before any helper imports
picotrain: an installed (editable) picotrain may be another checkout's, and the mirror must be
the code being measured."""
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _p in (str(_ROOT), str(_ROOT / "device")):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)
