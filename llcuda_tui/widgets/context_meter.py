"""The context meter: system + history + reply budget against the context, as a bar."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Static

if TYPE_CHECKING:
    from llcuda_tui.core.chat import ContextPlan

BAR_CELLS = 24


class ContextMeter(Static):
    """Shows a ContextPlan; classes ``-warn`` / ``-over`` colour it."""

    DEFAULT_CSS = """
    ContextMeter { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    ContextMeter.-warn { color: $warning; }
    ContextMeter.-over { color: $error; text-style: bold; }
    """

    def show_plan(self, plan: ContextPlan | None, note: str = "") -> None:
        """Render ``plan``, or ``note`` when there is none."""
        state = plan.state if plan is not None else "ok"
        self.set_class(state == "warn", "-warn")
        self.set_class(state == "over", "-over")
        if plan is None:
            # layout: a long note wraps to a second line (it was cut at the edge); the meter
            # is never updated while a reply streams, so this costs no streaming time
            self.update(f"context: {note or 'no model loaded'}")
            return
        filled = min(BAR_CELLS, round(plan.fraction * BAR_CELLS))
        bar = "█" * filled + "░" * (BAR_CELLS - filled)
        self.update(f"context {bar} {plan.describe()}")
