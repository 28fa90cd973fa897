"""What the image tower computes, in one function: the torch backend runs it eagerly and the ONNX
export traces it, so both backends give the same outputs by construction.

Why a module of its own: `backends` (which runs the graph) and `onnx_export` (which writes it) both
need it; defined in either, the two modules would import each other.
"""

from __future__ import annotations

from typing import Any

import torch


def image_tower_outputs(
    vision_model: Any, projection: Any, pixels: torch.Tensor, patches: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalized image (and patch) embeddings: what both backends compute, the ONNX graph included."""
    vision = vision_model(pixel_values=pixels)
    emb = projection(vision.pooler_output).float()
    emb = emb / emb.norm(dim=-1, keepdim=True)
    patch = None
    if patches:
        tokens = vision_model.post_layernorm(vision.last_hidden_state[:, 1:])
        patch = projection(tokens).float()
        patch = patch / patch.norm(dim=-1, keepdim=True)
    return emb, patch
