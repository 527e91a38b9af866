"""The four screens (thin: they render state from ``core`` and call it) and their dialogs."""
