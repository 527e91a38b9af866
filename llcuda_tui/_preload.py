"""Load llama.cpp's shared library before anything imports numpy.

Measured on the H100 machine (CUDA build of llama-cpp-python 0.3.36, numpy 2.5.5 wheel):
with numpy imported first, ``llama_model_load_from_file`` segfaults when it loads a model onto
the GPU; with libllama loaded first, it never does (``import llama_cpp`` itself loads its
library before numpy, but the ``gguf`` package, our benchmarks or a plot may import numpy
earlier). Loading the library costs a few milliseconds (5.6 ms for the CPU build here; a
CUDA build's brings cuBLAS with it) and imports nothing; :func:`preload_before_numpy` pays it
only when numpy is about to be imported, so ``llcuda models ls`` never does.

The loaded library also answers what it was built with (:func:`llama_system_info`), so
``llcuda --version`` need not ``import llama_cpp`` (numpy and ctypes bindings for every
llama.cpp function) to say so.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path
from typing import Any

_libllama: ctypes.CDLL | None = None


def llama_package_dir() -> Path | None:
    """Where the ``llama_cpp`` package is installed, found without importing it."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def preload_before_numpy() -> None:
    """Load libllama just before numpy's first import (now, if numpy is already in)."""
    if "numpy" in sys.modules:
        preload_llama()
    elif not any(isinstance(f, _BeforeNumpy) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeNumpy())


class _BeforeNumpy:
    """An import hook that finds nothing: it loads libllama when ``numpy`` is asked for, then
    steps aside (the import goes on through the usual finders)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "numpy":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            preload_llama()


def preload_llama() -> bool:
    """dlopen libllama (and with it ggml and its CUDA libraries); True when it was loaded."""
    return _library() is not None


def llama_system_info() -> str | None:
    """llama.cpp's ``llama_print_system_info()`` (its CPU features, and CUDA's archs in a CUDA
    build) through the library :func:`preload_llama` loads; None when there is none."""
    lib = _library()
    if lib is None:
        return None
    func = lib.llama_print_system_info
    func.restype = ctypes.c_char_p
    func.argtypes = []
    return (func() or b"").decode(errors="replace")


def _library() -> ctypes.CDLL | None:
    global _libllama
    if _libllama is None:
        package = llama_package_dir()
        lib = package / "lib" / "libllama.so" if package is not None else None
        if lib is None or not lib.exists():
            return None
        try:
            # the same mode llama_cpp uses: its later load (or an earlier one) is this handle
            _libllama = ctypes.CDLL(str(lib))
        except OSError:
            return None
    return _libllama
