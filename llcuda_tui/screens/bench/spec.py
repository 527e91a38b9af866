"""The Benchmark screen's speculative mode: the comparison ``llcuda bench --spec`` runs
(core's ``compare_speculation``: the edit workload's decode t/s plain and with a drafter,
interleaved rounds, medians), from the screen's form plus the fields here.

:class:`SpecFields` is the drafter, draft model and draft max, shown in the form row in this
mode only; :func:`spec_job` builds the run; :func:`show_spec_results` fills the Results
table. The run goes through the screen's benchmark process like the other modes (no GIL
shared with the UI), with its progress; nothing is stored in the history (as on the CLI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Select

from llcuda_tui.core.errors import UserInputError

if TYPE_CHECKING:
    from llcuda_tui.core.bench import ModelRef, SpecBenchJob, SpecModeResult
    from llcuda_tui.core.store import ModelChoice

SPEC_MODE = "speculative"
DRAFTERS = (("lookup", "ngram"), ("draft", "draft"), ("both", "both"))
"""Short names: at 80 columns the draft picker beside them kept 10 columns with longer ones."""


class SpecFields(Horizontal):
    """``drafter [..] draft model [..] draft max [n]``: the drafter's options and the draft
    picker's prompt say what they are (a Select shows no border title), draft max is named by
    its border title like the form's other fields."""

    DEFAULT_CSS = """
    SpecFields { width: 4fr; height: 3; }
    SpecFields Select { width: 1fr; }
    SpecFields #spec-drafter { width: 14; }
    /* beats the form's `Input { width: 1fr }` (a class more) */
    SpecFields Input#spec-draft-max.-spec { width: 15; }
    SpecFields Input { border-title-color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        drafter = Select(DRAFTERS, value="ngram", allow_blank=False, id="spec-drafter")
        draft: Select[str] = Select([], prompt="draft model", id="spec-draft-model")
        draft_max = Input("16", id="spec-draft-max", type="integer", classes="-spec")
        drafter.tooltip = "drafts from prompt lookup (ngram), a draft model, or both"
        draft.tooltip = "the draft model (the benchmarked model's vocabulary)"
        draft_max.border_title, draft_max.tooltip = "draft max", "most tokens drafted per step"
        yield from (drafter, draft, draft_max)

    def show_choices(self, choices: list[ModelChoice]) -> None:
        """The models a draft can be (the screen's list)."""
        select = self.query_one("#spec-draft-model", Select)
        current = select.value
        select.set_options((c.name, c.name) for c in choices)
        if isinstance(current, str) and any(c.name == current for c in choices):
            select.value = current


def spec_job(
    fields: SpecFields,
    model: ModelRef,
    choices: dict[str, ModelChoice],
    n_gen: int,
    repetitions: int,
    n_gpu_layers: int,
) -> SpecBenchJob:
    """The run the form describes, as ``llcuda bench --spec`` builds it (a 2048-token context,
    the draft where the model goes). Raises ``UserInputError``."""
    from llcuda_tui.core.bench import SpecBenchJob
    from llcuda_tui.core.engine import EngineConfig, SpecSettings

    drafter = str(fields.query_one("#spec-drafter", Select).value)
    try:
        draft_max = int(fields.query_one("#spec-draft-max", Input).value)
    except ValueError:
        raise UserInputError("draft max must be a number") from None
    specs = []
    if drafter in ("ngram", "both"):
        specs.append(SpecSettings(mode="ngram", draft_max=draft_max))
    if drafter in ("draft", "both"):
        name = fields.query_one("#spec-draft-model", Select).value
        if not isinstance(name, str) or name not in choices:
            raise UserInputError(f"the drafter '{drafter}' needs a draft model: pick one")
        specs.append(
            SpecSettings(
                mode="draft",
                draft_model=choices[name].path,
                draft_max=draft_max,
                draft_n_gpu_layers=0 if n_gpu_layers == 0 else -1,
            )
        )
    for s in specs:
        s.validate()
    config = EngineConfig(model.path, n_ctx=2048, n_gpu_layers=n_gpu_layers)
    config.validate()
    return SpecBenchJob(config, tuple(specs), max(n_gen, 1), repetitions)


def show_spec_results(table: DataTable[str], results: list[SpecModeResult]) -> str:
    """Fill ``table`` with one row per mode; the summary line for the status."""
    table.clear(columns=True)
    table.add_columns(
        "mode", "decode t/s (median ± sd)", "range", "drafted", "accepted", "vs plain",
        "same text",
    )  # fmt: skip
    for r in results:
        plain = r.mode == "plain"
        table.add_row(
            r.mode,
            f"{r.decode_tokens_per_s:.1f} ± {r.decode_tokens_per_s_sd:.1f}",
            f"{r.decode_tokens_per_s_min:.1f}-{r.decode_tokens_per_s_max:.1f}",
            "" if plain else str(r.drafted_tokens),
            "" if plain else f"{r.accepted_tokens} ({100 * r.acceptance_rate:.0f} %)",
            "1.00x" if plain else f"{r.ratio:.2f}x ({r.ratio_min:.2f}-{r.ratio_max:.2f})",
            "yes" if r.same_text else "NO",
        )
    sped = [r for r in results if r.mode != "plain"]
    summary = ", ".join(
        f"{r.mode} {r.ratio:.2f}x ({100 * r.acceptance_rate:.0f} % accepted)" for r in sped
    )
    if not all(r.same_text for r in results):
        # exact but for near-tied logits, which a batch can round the other way on the CPU
        summary += "; a mode's text differs from plain decoding's (docs/architecture.md)"
    return f"speculative done: {summary}"
