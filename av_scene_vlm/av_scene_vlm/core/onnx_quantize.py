"""The int8 image tower: the exported graph with its MatMul weights quantized per output channel, and
activations quantized at run time (ONNX Runtime dynamic quantization).

Why dynamic, per channel, MatMul only: on a CPU with VNNI the ViT's time is its MatMuls; per-channel
weight scales keep the embedding cosine vs fp32 above 0.9998 on ViT-B/32 (docs/PRECISION.md) with no
calibration set, so the graph is built from the loaded checkpoint alone. Why the TorchScript exporter
here, not the dynamo one the fp32 graph uses: the dynamo graph shares the projection's weight between
two MatMuls through a folded transpose, and the quantizer's shape inference rejects it ("Inferred shape
and existing shape differ"); the TorchScript graph quantizes cleanly (also what the issue measured).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch


def export_int8(
    tower: torch.nn.Module,
    dummy: torch.Tensor,
    path: Path,
    input_name: str,
    outputs: Sequence[str],
    opset: int,
) -> None:
    """Export `tower` (fp32) with the TorchScript exporter next to `path`, quantize it into `path`.
    Errors propagate as raised (ImportError without onnxruntime); onnx_export makes them one ExportError."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if dummy.dtype != torch.float32:
        raise ValueError(f"precision int8 quantizes a float32 model, not {dummy.dtype}")
    quiet = _Quiet()  # the quantizer's advice to pre-process goes to the root logger, every time
    logging.getLogger().addFilter(quiet)
    source = path.with_name(path.stem + ".fp32-source.onnx")
    axes = {name: {0: "batch"} for name in (input_name, *outputs)}
    try:
        with warnings.catch_warnings(), torch.no_grad(), torch.inference_mode(False):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tower,
                (dummy,),
                str(source),
                input_names=[input_name],
                output_names=list(outputs),
                opset_version=opset,
                dynamo=False,
                dynamic_axes=axes,
            )
            quantize_dynamic(
                str(source),
                str(path),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
            )
    finally:
        logging.getLogger().removeFilter(quiet)
        with contextlib.suppress(OSError):
            source.unlink()


class _Quiet(logging.Filter):
    """Drops onnxruntime.quantization's 'consider to run pre-processing' warning (not applicable: the
    TorchScript graph carries its shapes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()
