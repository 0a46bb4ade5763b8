"""Evaluation: the LVIS metric and its backends."""
