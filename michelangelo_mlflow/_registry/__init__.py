"""Dual registration: the MLflow Model Registry and the Michelangelo ``Model`` resource."""

from __future__ import annotations

from michelangelo_mlflow._registry._register import (
    MichelangeloModelRef,
    Registration,
    register_model,
)

__all__ = ["MichelangeloModelRef", "Registration", "register_model"]
