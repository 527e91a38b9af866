"""The Benchmark screen's form as data: its choices and first values, how the typed text
becomes a core spec (``build_spec``) and the idle line's estimate (``estimate_line``).

No widgets here: the screen reads its fields into ``{field id: text}`` and calls these, so
what a form means is in one place, apart from how it is laid out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from llcuda_tui.core.bench import int_list
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.screens.bench.spec import SPEC_MODE

if TYPE_CHECKING:
    from llcuda_tui.core.bench import BenchSpec, LatencySpec
    from llcuda_tui.core.store import ModelChoice

FORM_DEFAULTS = {"n-prompt": "512", "n-gen": "128", "reps": "5"}
"""The form's first values (llama-bench's); resized for the CPU once the machine is known,
unless the user has typed others."""
MODES = (
    ("pp/tg", "throughput"), ("sweep", "sweep"), ("latency", "latency"),
    ("spec", SPEC_MODE),  # spec.py: decode t/s with and without speculative decoding
)  # fmt: skip
FORMATS = (("Markdown", "md"), ("CSV", "csv"), ("JSON", "json"))
LOCAL = "local"
"""The target value of this machine (the others are worker URLs)."""
FIELDS = ("n-prompt", "n-gen", "reps", "bench-ngl", "bench-batch", "bench-concurrency")
"""The ids of the form's inputs (the keys of the values ``build_spec`` reads)."""


def build_spec(
    mode: str,
    target: str,
    picked: object,
    choices: Mapping[str, ModelChoice],
    values: Mapping[str, str],
) -> tuple[str, BenchSpec | LatencySpec]:
    """The spec of the run the form describes: ``picked`` is the model picker's value,
    ``values`` the text of each of ``FIELDS``; UserInputError says what is wrong."""
    from llcuda_tui.core.bench import BenchSpec, LatencySpec, ModelRef, default_prompts

    if target != LOCAL:
        if mode != "latency":
            raise UserInputError(
                "a worker runs the latency mode only (pp/tg and sweep load models here)"
            )
        model = ModelRef(Path(target), target)  # the worker's own model, once connected
    else:
        if not isinstance(picked, str) or picked not in choices:
            raise UserInputError("pick a model first")
        c = choices[picked]
        model = ModelRef(c.path, c.name, c.sha256)

    def ints(field_id: str, what: str) -> tuple[int, ...]:
        try:
            return int_list(values[field_id])
        except ValueError as exc:
            raise UserInputError(f"{what}: {exc}") from None

    n_prompt, n_gen = ints("n-prompt", "pp"), ints("n-gen", "tg")
    reps, ngl, batch, concurrency = (
        ints("reps", "reps"),
        ints("bench-ngl", "ngl"),
        ints("bench-batch", "batch"),
        ints("bench-concurrency", "concurrency"),
    )
    if mode != "sweep" and any(len(v) > 1 for v in (ngl, batch)):
        raise UserInputError("lists of ngl or batch values need the sweep mode")
    if mode != "latency" and concurrency != (1,):
        raise UserInputError("concurrency > 1 needs the latency mode")
    if mode == "latency":
        where = "" if target == LOCAL else f" on worker {target}"
        latency = LatencySpec(
            model=model,
            prompts=default_prompts(),
            iters=reps[0],
            max_tokens=max(n_gen[0], 1),
            concurrency=concurrency[0],
            n_gpu_layers=ngl[0],
            command=f"llcuda tui (latency{where})",
        )
        latency.validate()
        return mode, latency
    spec = BenchSpec(
        models=(model,),
        n_prompt=n_prompt,
        n_gen=n_gen,
        repetitions=reps[0],
        n_gpu_layers=ngl,
        n_batch=batch,
        command=f"llcuda tui ({mode})",
    )
    spec.validate()
    return mode, spec


def estimate_line(
    choice: ModelChoice,
    values: Mapping[str, str],
    on_gpu: bool,
    measured: dict[str, float] | None,
) -> str:
    """How long a pp/tg or sweep run of ``choice`` with the form's ``values`` takes ("" while
    a field does not parse); ``measured``: the model's t/s from its last run here."""
    from llcuda_tui.core.bench import BenchSizes, Estimate, estimate_s

    fields = ("n-prompt", "n-gen", "reps", "bench-ngl", "bench-batch")
    try:
        lists = [int_list(values[f]) for f in fields]
    except ValueError:
        return ""
    n_prompt, n_gen, reps, ngl, batch = lists
    on_gpu = on_gpu and any(n != 0 for n in ngl)
    total = 0.0
    for p in n_prompt:
        for g in n_gen:
            est = estimate_s(
                BenchSizes(p, g, reps[0]),
                model_bytes=choice.size_bytes,
                n_params=choice.summary.parameter_count if choice.summary else 0,
                on_gpu=on_gpu,
                n_cpus=os.cpu_count() or 1,
                measured=measured,
            )
            total += est.seconds
    total *= len(ngl) * len(batch)  # a sweep runs every combination
    return f"this run takes {Estimate(total, bool(measured)).describe()}"
