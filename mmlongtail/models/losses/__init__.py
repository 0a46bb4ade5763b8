"""Long-tail classification losses, one method per file."""
# Each module registers its loss in mmlongtail.registry.MODELS on import.
