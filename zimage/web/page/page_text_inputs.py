"""The words of the page's input checks (ui_inputs) and image refusals (ui_refusals), in English and
Simplified Chinese; page_text merges them into its two tables."""
from __future__ import annotations

EN_INPUTS: dict[str, str] = {
    "input_too_long": "{name} is too long: {n} / {max} characters. Shorten it, then try again.",
    "input_required": "{name} is empty: give it a value.",
}

ZH_INPUTS: dict[str, str] = {
    "input_too_long": "{name}太长：{n} / {max} 个字符。请缩短后重试。",
    "input_required": "{name}为空：请填写一个值。",
}
