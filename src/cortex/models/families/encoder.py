"""BERT-family and ESM-family encoders through ``AutoModel``."""

from __future__ import annotations

from typing import Any

from torch import nn

from cortex.hub.families import FamilyAdapter, register_family


@register_family
class EncoderFamily(FamilyAdapter):
    name = "encoder"
    model_types = (
        "bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2",
        "esm", "mpnet", "camembert", "albert", "modernbert",
    )
    task = "encoder"
    description = "BERT / RoBERTa / DistilBERT / ESM / ... encoders (transformers AutoModel)"

    def auto_class(self) -> Any:
        from transformers import AutoModel

        return AutoModel

    def layers(self, model: nn.Module) -> list[nn.Module]:
        for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
            obj: Any = model
            for attr in path.split("."):
                obj = getattr(obj, attr, None)
                if obj is None:
                    break
            if isinstance(obj, nn.ModuleList):
                return list(obj)
        return super().layers(model)
