"""Which modules of the Z-Image pipeline are its repeated blocks and layers, and how a quantized
weight is marked: the shape knowledge that planning, streaming, int8 and fp8 all read (one place,
so none of them imports another for it)."""
from __future__ import annotations

SCALE = "weight_scale"          # the buffer beside an int8 weight: its per-row float32 scale


def transformer_blocks(transformer) -> list:
    """The transformer's repeated blocks in the order its forward runs them."""
    return list(transformer.noise_refiner) + list(transformer.context_refiner) + list(transformer.layers)


def text_encoder_layers(text_encoder) -> list:
    """The text encoder's decoder layers, in order."""
    return list(text_encoder.layers)



def controlnet_blocks(controlnet) -> list:
    """The ControlNet's own repeated blocks in the order its forward runs them: the control noise
    refiners (2.x: before the shared refiners; v1: after them), then the control layers. Its
    embedders and refiners shared with the transformer are the transformer's, not listed here."""
    return list(controlnet.control_noise_refiner or []) + list(controlnet.control_layers)
