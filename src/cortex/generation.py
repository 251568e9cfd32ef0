"""Inference helpers shared by the CLI and the library."""

from __future__ import annotations

import warnings

from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations quantized on the fly; CPU)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks the quantized-tensor API deprecated; it still works on CPU
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
