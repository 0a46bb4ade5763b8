"""Runner-side components (hooks)."""
