"""Finding MPI: ``mpi4py`` (imported lazily, with one clear line when missing) and ``mpiexec``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from llcuda_tui.core.errors import UserInputError

INSTALL_HINT = "install the 'mpi' extra: pip install 'llcuda-tui[mpi]' (mpi4py + Open MPI)"


def import_mpi() -> Any:
    """``mpi4py.MPI`` (initialised with MPI_THREAD_MULTIPLE), or a UserInputError saying how to
    get it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise UserInputError(f"--mpi needs mpi4py ({exc}); {INSTALL_HINT}") from None
    return MPI


def find_mpiexec() -> Path | None:
    """``$LLCUDA_MPIEXEC``, then ``mpiexec`` on PATH, then the one next to this Python (the
    Open MPI wheel installs it into the virtual environment's ``bin``)."""
    explicit = os.environ.get("LLCUDA_MPIEXEC")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    for candidate in (shutil.which("mpiexec"), Path(sys.executable).parent / "mpiexec"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def mpiexec_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for running ``mpiexec`` here: Open MPI refuses root without these two
    variables (containers, CI); harmless for other users and other MPIs."""
    env = dict(os.environ if environ is None else environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


def mpiexec_command(
    n_ranks: int, argv: list[str], mpiexec: Path | None = None, oversubscribe: bool = True
) -> list[str]:
    """``mpiexec -n N [--oversubscribe] argv...``; ``--oversubscribe`` (Open MPI) lets a
    machine run more ranks than it has cores (CI)."""
    exe = mpiexec or find_mpiexec()
    if exe is None:
        raise UserInputError(f"no mpiexec found (not on PATH, not next to Python); {INSTALL_HINT}")
    extra = ["--oversubscribe"] if oversubscribe and is_open_mpi(exe) else []
    return [str(exe), "-n", str(n_ranks), *extra, *argv]


def is_open_mpi(exe: Path) -> bool:
    """Open MPI ships ``ompi_info`` beside ``mpiexec``; MPICH (hydra) knows no --oversubscribe."""
    return (exe.parent / "ompi_info").exists() or exe.resolve().name.startswith("ompi")


def launched_ranks(environ: dict[str, str] | None = None) -> int:
    """How many ranks the MPI launcher started this job with (1 when not under one), from the
    variables Open MPI (OMPI_COMM_WORLD_SIZE) and MPICH/PMI (PMI_SIZE) set: a command run by
    ``mpiexec -n 4`` without ``--mpi`` would otherwise do its work four times over."""
    env = os.environ if environ is None else environ
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return 1
