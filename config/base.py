"""Shared base for every configuration section: unknown keys are errors, every field is described."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of all configuration models (``extra="forbid"``: a misspelt key is reported, not ignored)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, use_attribute_docstrings=True)
