"""The model picker's words (web/page/ui_models.py) in the page's two languages; page_text merges them
into its tables, so `label()` and `text()` know them."""
from __future__ import annotations

MODELS_EN: dict[str, str] = {
    "model_picker": "Model",
    "model_refresh": "Refresh models",
    "model_kind_turbo": "Turbo",
    "model_kind_base": "base",
    "model_choice": "{name} · {kind} · {format} · {size}",
    "model_switching": "Switching to **{name}**: it loads after the generations already queued (progress above).",
    "model_current": "**{name}** is the model in use.",
    "model_failed": "Cannot switch: {error}",
}

MODELS_ZH: dict[str, str] = {
    "model_picker": "模型",
    "model_refresh": "刷新模型列表",
    "model_kind_turbo": "Turbo",
    "model_kind_base": "基础版",
    "model_choice": "{name} · {kind} · {format} · {size}",
    "model_switching": "正在切换到 **{name}**：在已排队的生成完成后加载（进度见上方）。",
    "model_current": "当前使用的模型是 **{name}**。",
    "model_failed": "无法切换：{error}",
}
