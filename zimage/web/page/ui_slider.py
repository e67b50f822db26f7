"""The Generate tab's width and height sliders, whose bounds the app checks instead of Gradio.

Gradio's Slider refuses a typed value outside its range in preprocess, before any handler runs,
with an English "Value 250 is less than minimum value 256." that names no field: in the Chinese
page that was the one English message left, and it never named Width. Here the value passes
through, and ui.size_problem (as it changes) and GenerationRequest (on Generate) refuse it in the
page's language, naming the field.

A subclass, not an override on the instance: Gradio rebuilds a component from its class on every
update (gr.skip() included), dropping anything set on the instance.
"""
from __future__ import annotations

import math
from abc import ABCMeta

import gradio as gr
from gradio.component_meta import ComponentMeta
from gradio.components.number import Number


class _NoStub(ComponentMeta):
    """ComponentMeta writes a .pyi stub beside the module of every Component class it sees defined
    (for custom-component packages); a subclass that adds no events needs none of what it does."""
    def __new__(mcs, name, bases, attrs):
        return ABCMeta.__new__(mcs, name, bases, attrs)


class SizeSlider(gr.Slider, metaclass=_NoStub):
    is_template = True          # drawn in the browser as Gradio's own slider

    def preprocess(self, payload):
        if isinstance(payload, (int, float)) and not isinstance(payload, bool) and math.isfinite(payload):
            return Number.round_to_precision(payload, self.precision)
        return payload          # not a number: the handlers' as_int / GenerationRequest name the field
