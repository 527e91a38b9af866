"""The product's core: usable without the TUI (no Textual or Rich imports here)."""
