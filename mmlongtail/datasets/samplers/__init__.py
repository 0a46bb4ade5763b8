"""Data samplers."""
