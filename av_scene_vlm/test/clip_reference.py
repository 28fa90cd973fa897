"""An independent zero-shot CLIP reference, computed with transformers alone (CLIPModel + CLIPProcessor).

Why: the node, CLI and bag tests compare what they publish or print with this, not with
ZeroShotEngine, so a mistake the engine shares with the code under test (preprocessing, prompt
ensembling, scoring, output order) cannot hide. The maths is the CLIP paper's: L2-normalised image
and text features, a label's prompts averaged and renormalised (prompt ensemble), probabilities the
softmax of `logit_scale.exp() * cosine` over a task's labels. Prompts are given spelled out, never
expanded from templates by project code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch


@dataclass
class ReferenceTask:
    labels: list[str]
    probabilities: np.ndarray  # (L,) float64
    cosine: np.ndarray  # (L,) cosine of the image with each label's ensembled text embedding

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]


@dataclass
class ReferenceResult:
    tasks: dict[str, ReferenceTask]
    image_embedding: np.ndarray  # (D,) L2-normalised


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output for get_*_features; older versions a tensor.
    return getattr(out, "pooler_output", out)


class ClipReference:
    """Zero-shot classification of one RGB uint8 frame the way transformers' CLIPModel scores it."""

    def __init__(self, model_dir: str) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(model_dir).eval()
        self.processor = CLIPProcessor.from_pretrained(model_dir)

    @torch.no_grad()
    def image_embedding(self, rgb: np.ndarray) -> torch.Tensor:
        from PIL import Image

        pixels = self.processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
        e = _features(self.model.get_image_features(pixel_values=pixels))[0].double()
        return e / e.norm()

    @torch.no_grad()
    def label_embedding(self, prompts: list[str]) -> torch.Tensor:
        tok = self.processor.tokenizer(prompts, padding=True, return_tensors="pt")
        e = _features(self.model.get_text_features(**tok)).double()
        mean = (e / e.norm(dim=-1, keepdim=True)).mean(0)
        return mean / mean.norm()

    def classify(self, rgb: np.ndarray, tasks: dict[str, dict[str, list[str]]]) -> ReferenceResult:
        """`tasks`: {task: {label: [prompts]}}, prompts written out in full."""
        img = self.image_embedding(rgb)
        scale = self.model.logit_scale.detach().exp().item()
        out = {}
        for name, labels in tasks.items():
            text = torch.stack([self.label_embedding(p) for p in labels.values()])
            cos = text @ img
            out[name] = ReferenceTask(list(labels), (scale * cos).softmax(-1).numpy(), cos.numpy())
        return ReferenceResult(out, img.numpy())


@cache
def clip_reference(model_dir: str) -> ClipReference:
    """One reference per checkpoint for the whole test session."""
    return ClipReference(str(model_dir))


def photo_prompts(*labels: str) -> dict[str, list[str]]:
    """Labels with the default template, written out: {'car': ['a photo of a car.'], ...}."""
    return {label: [f"a photo of a {label}."] for label in labels}
