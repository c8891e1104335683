"""Thin FastAPI layer: parse, call the core, serialise."""
