"""``identity``: returns its input. The smoke-test method and the "input" row of tables."""

from __future__ import annotations

import torch

from .base import Method


class Identity(Method):
    name = "identity"
    display_name = "Input"
    family = "reference"
    citation = "The unprocessed input image."

    def enhance(self, low: torch.Tensor) -> torch.Tensor:
        return low
