"""The frozen lower part of a BERT-style encoder, run once per example instead of once per
epoch: while only the top layers train, the embeddings and lower layers give the same output
every epoch, so caching it makes each epoch cost the top layers alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def has_layer_stack(model: Any) -> bool:
    """BERT, RoBERTa, MiniLM, ...: ``base_model.embeddings`` then ``encoder.layer[i]``."""
    base = getattr(model, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    return getattr(base, "embeddings", None) is not None and hasattr(layers, "__getitem__")


class FrozenTrunk:
    """Use as a context: inside it the model's embeddings hand over cached states and only
    the layers above the trunk run; on exit the model is whole again."""

    def __init__(self, model: Any, layers: int) -> None:
        import torch

        self.base = model.base_model
        self.layers = self.base.encoder.layer
        self.depth = max(1, min(layers, len(self.layers) - 1))
        self.embeddings = self.base.embeddings

        class CachedStates(torch.nn.Module):
            value: Any = None

            def forward(self, **_: Any) -> Any:
                return self.value

        self.cached = CachedStates()

    def states(self, batches: Sequence[dict[str, Any]]) -> list[Any]:
        """The trunk's output for each example of the padded ``batches``, without padding."""
        import torch

        whole = self.base.encoder.layer
        self.base.encoder.layer = self.layers[:self.depth]
        was_training = self.base.training
        self.base.eval()
        out = []
        try:
            with torch.no_grad():  # not inference_mode: these become inputs of a backward
                for inputs in batches:
                    hidden = self.base(**inputs).last_hidden_state
                    for row, mask in zip(hidden, inputs["attention_mask"]):
                        out.append(row[:int(mask.sum())].clone())
        finally:
            self.base.encoder.layer = whole
            self.base.train(was_training)
        return out

    def inputs(self, states: Sequence[Any]) -> dict[str, Any]:
        """Model keyword arguments for a batch of cached states (padded with zeros; the
        attention mask hides the padding)."""
        import torch

        width = max(s.shape[0] for s in states)
        padded = torch.zeros(len(states), width, states[0].shape[1], dtype=states[0].dtype)
        mask = torch.zeros(len(states), width, dtype=torch.long)
        for i, s in enumerate(states):
            padded[i, :s.shape[0]] = s
            mask[i, :s.shape[0]] = 1
        self.cached.value = padded
        # input_ids only satisfies the model's argument check; the cached states replace it.
        return {"input_ids": mask, "attention_mask": mask}

    def __enter__(self) -> FrozenTrunk:
        self.base.encoder.layer = self.layers[self.depth:]
        self.base.embeddings = self.cached
        return self

    def __exit__(self, *_: Any) -> None:
        self.base.encoder.layer = self.layers
        self.base.embeddings = self.embeddings
        self.cached.value = None
