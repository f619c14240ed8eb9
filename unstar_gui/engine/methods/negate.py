"""Task-vector negation (Ilharco et al. 2023, "Editing models with task arithmetic"): fit a LoRA that reinforces the
fact (CE on question -> true answer), then apply it with a negative scale: theta_base - alpha x tau_forget
(+ beta x tau_retain when a retain direction is asked for). Nothing is trained on the negated model itself.

How it maps onto one LoRA adapter (delta W = scale x A B): the adapter stays attached at its configured scale S,
and the loss looks at it through a "fit view" where every LoRA layer's scale is -S/alpha. So the adapter the
trainer holds is always the negation of the direction it fits, and the pipeline's re-probes between rounds measure
the negated model (a round that leaves the fact in place fits tau further, which deepens the negation).
`finalize` then rewrites the adapter as (A, -B) at scale -S: the same function, but the saved adapter_config.json
says scale -S, so plain `mlx_lm.load(adapter_path=...)` applies the negation and the sign is visible in the file.

With beta > 0 the LoRA rank is split: the first half fits tau_forget (view scale -S/alpha), the second half fits
tau_retain on the retain set's base answers (view scale S/beta), giving theta_base - alpha tau_f + beta tau_r.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

from .base import Batch, masked_ce
from .ga_kl import FactMethod


def model_lora_layers(model: Any) -> list[Any]:
    from mlx_lm.tuner.lora import LoRALinear

    return [m for _, m in model.named_modules() if isinstance(m, LoRALinear)]


@contextlib.contextmanager
def fit_view(layers: Sequence[Any], factor: float, ranks: slice | None = None) -> Iterator[None]:
    """Inside: every LoRA layer's scale multiplied by `factor`, and (with `ranks`) only those rank columns of
    lora_a active. Gradients flow to the real lora_a / lora_b; both come back unchanged afterwards."""
    import mlx.core as mx

    saved = [(layer.scale, layer.lora_a) for layer in layers]
    try:
        for layer in layers:
            layer.scale = layer.scale * factor
            if ranks is not None:
                keep = mx.zeros((layer.lora_a.shape[1],))
                keep[ranks] = 1.0
                layer.lora_a = layer.lora_a * keep
        yield
    finally:
        for layer, (scale, a) in zip(layers, saved):
            layer.scale, layer.lora_a = scale, a


class NegateMethod(FactMethod):
    name = "negate"
    description = "Task-vector negation: fit a LoRA to the fact, apply it with a negative scale."

    def loss(self, model: Any, batch: Batch) -> tuple[Any, dict[str, Any]]:
        import mlx.core as mx

        assert self.ctx is not None, "prepare() first"
        alpha, beta = float(self.ctx.negate_alpha), float(self.ctx.negate_beta)
        if alpha <= 0:
            raise ValueError("negate_alpha must be positive (it is the strength of the negation).")
        layers = model_lora_layers(model)
        split = beta > 0 and batch.retain is not None
        rank = layers[0].lora_a.shape[1] if layers else 0
        with fit_view(layers, -1.0 / alpha, slice(0, rank // 2) if split else None):
            forget = masked_ce(model, batch.forget)
        retain = mx.array(0.0)
        if split:
            with fit_view(layers, 1.0 / beta, slice(rank // 2, rank)):
                retain = masked_ce(model, batch.retain)
        return forget + retain, {"forget": forget, "retain": retain}

    def finalize(self, llm: Any) -> None:
        """(A, B) at scale S -> (A, -B) at scale -S: the same model, with the negative scale in the saved config."""
        import mlx.core as mx

        for layer in llm.lora_layers():
            layer.lora_b = -layer.lora_b
            layer.scale = -layer.scale
        mx.eval(llm.model.parameters())
        llm.lora = dataclasses.replace(llm.lora, scale=-llm.lora.scale)
