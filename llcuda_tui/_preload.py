"""Load llama.cpp's shared library before anything imports numpy.

Measured on the H100 machine (CUDA build of llama-cpp-python 0.3.36, numpy 2.5.5 wheel):
with numpy imported first, ``llama_model_load_from_file`` segfaults when it loads a model onto
the GPU; with libllama loaded first, it never does (``import llama_cpp`` itself loads its
library before numpy, but the ``gguf`` package, our benchmarks or a plot may import numpy
earlier). Loading the library here costs a few milliseconds and imports nothing.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path


def preload_llama() -> bool:
    """dlopen libllama (and with it ggml and its CUDA libraries); True when it was loaded."""
    if "llama_cpp" in sys.modules:
        return True
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libllama.so"
    if not lib.exists():
        return False
    try:
        ctypes.CDLL(str(lib))  # the same mode llama_cpp uses: the later load reuses this handle
    except OSError:
        return False
    return True
