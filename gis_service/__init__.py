"""廊坊空间决策支持系统 — Langfang spatial decision support service."""

__version__ = "0.1.0"
