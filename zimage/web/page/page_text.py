"""The page's words in English and Simplified Chinese: one table per language, keyed, and the two
ways a key reaches the reader.

- Static text (labels, info, placeholders, buttons, choices, tab and accordion titles) is a
  `label(key)`: Gradio sends the key and the browser translates it with page_i18n() (passed to
  gr.mount_gradio_app), in the language Gradio's frontend has chosen (the browser's, or the page's
  switch, ui_page.LANG_JS).
- Text the server builds (the status panel, progress, results, messages, gr.Info/Warning/Error) is
  `text(key, lang, **parts)`, with `lang` from `request_lang(request)`: the page switch's cookie,
  else the request's Accept-Language (zimage.i18n.page_language), so both agree with what the
  frontend shows.

tests/test_page_text.py walks the page modules and fails on a key missing from either table, a
table key nobody uses, or a template whose {parts} differ between the languages. Error messages
and hints are zimage/i18n.py's (ZImageError.user_text(lang)).
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Iterable

from ...i18n import page_language
from ...state import LoadStage, LoadState, Status
from .page_text_controlnet import CONTROLNET_EN, CONTROLNET_ZH
from .page_text_edit import EDIT_EN, EDIT_ZH
from .page_text_explore import EXPLORE_EN, EXPLORE_ZH
from .page_text_hires import HIRES_EN, HIRES_ZH
from .page_text_history import HISTORY_EN, HISTORY_ZH
from .page_text_inputs import EN_INPUTS, ZH_INPUTS
from .page_text_models import MODELS_EN, MODELS_ZH
from .page_text_more import MORE_EN, MORE_ZH
from .page_text_pnginfo import PNGINFO_EN, PNGINFO_ZH
from .page_text_prompt import PROMPT_EN, PROMPT_ZH
from .page_text_queue import QUEUE_EN, QUEUE_ZH

if TYPE_CHECKING:          # gradio is imported on first use: the starting page (web.launch) reads the tables without it
    import gradio as gr
    from gradio.i18n import I18nData

LANG_CHOICES = [("English", "en"), ("中文", "zh")]    # each in its own language: never translated
# Gradio's frontend names Chinese "zh-CN" / "zh-TW"; both read the Simplified table (as the server's
# zh does), so a zh-TW browser does not fall back to English for the app's own words.
FRONTEND_LOCALES = {"en": "en", "zh": "zh-CN"}

# The Generate tab's words, the status panel's, the cache and LoRA panels' and the start-up timeline's;
# each other part of the page has its own page_text_* module.
PAGE_EN: dict[str, str] = {
    # The page (ui.py)
    "lang_label": "Language / 语言",
    "tab_generate": "Generate",
    "tab_pnginfo": "PNG info",
    "cancel_download": "Cancel download",
    "prompt_label": "Prompt",
    "prompt_hint": "Describe the image · Ctrl+Enter (⌘+Enter) generates · Esc stops",
    "generate_btn": "Generate",
    "stop_btn": "Stop",
    "negative_label": "Negative prompt (used when guidance > 0)",
    "preset_label": "Size preset",
    "preset_custom": "Custom",
    "width": "Width",
    "height": "Height",
    "steps": "Steps",
    "guidance": "Guidance",
    "seed_label": "Seed (-1 = random)",
    "images_label": "Images",
    "settings_label": "Model and memory",
    "preload_btn": "Preload model",
    "unload_btn": "Unload",
    "unload_to_label": "Unload frees",
    "unload_keep_ram": "Free VRAM (keep in RAM)",
    "unload_free_all": "Free VRAM and RAM",
    "low_vram_label": "Low VRAM (stream weights from RAM)",
    "results_label": "Results",
    "no_gpu_low_vram": "No GPU on this machine: Low VRAM changes nothing here (the model runs from RAM anyway).",
    "no_gpu_unload": "No GPU on this machine: the model already lives in RAM, so \"Free VRAM (keep in RAM)\" "
                     "changes nothing here. Choose \"Free VRAM and RAM\" to free the memory.",
    # The status panel (ui.render_status)
    "state_unloaded": "Not loaded",
    "state_downloading": "Downloading",
    "state_loading": "Loading",
    "state_on_cpu": "Ready (CPU / RAM)",
    "state_on_gpu": "Ready (GPU)",
    "state_offloaded": "Ready (Low VRAM: offloaded)",
    "state_error": "Error",
    "stage_download": "download",
    "stage_read": "read weights",
    "stage_build": "build",
    "stage_move": "move to device",
    "stage_quantize": "quantize (once)",
    "stage_warmup": "warm up",
    "status_model": "Model:",
    "status_more": "details",
    "status_low_vram_on": "Low VRAM: on",
    "status_low_vram_off": "Low VRAM: off",
    "status_queue": "Queue: {n}",
    "status_left": "{s} s left",
    "status_plan": "Plan: {plan}",
    "status_peak": "peak VRAM {v}",
    "status_device": "Device: {device}",
    "status_last_image": "Last image: {s} s",
    "status_vram": "VRAM: {allocated} (device {used} / {total})",
    "status_ram": "RAM: process {rss} · free {free} / {total}",
    "phase_ready": "Ready",
    "phase_loading": "Loading",
    "phase_unloaded": "Not loaded",
    "phase_error": "Error",
    "phase_lost": "Not answering (Ray is restarting it)",
    "replica_head": "<tr><th>Replica</th><th>Node</th><th>Device</th><th>State</th><th>Queue</th>"
                    "<th>Last image</th></tr>",
    "replica_last": "{s} s at {time}",
    # Sizes, results, failures (ui.py)
    "size_whole": "**{name}** must be a whole number.",
    "size_range": "**{name}** must be between {lo} and {hi}, got {value}.",
    "size_multiple": "**{name}** must be a multiple of {m}: {value} lies between {below} and {above}.",
    "failure_generic": "The generation failed: {detail}. The model stays loaded and nothing was saved; try again, "
                       "and if it keeps failing, press Unload (Free VRAM and RAM) and then Preload model.",
    "check_settings": "Check the settings: {error}",
    "stopped_info": "Stopped: the cancelled image was discarded.",
    "stopped_text": "Stopped. No image was kept.",
    "stopping": "Stopping… (the image being made ends after its current step)",
    "nothing_to_stop": "Nothing to stop.",
    "result_info": "{n} image(s) in {s} s ({per} s/image){peak} · seeds {seeds}",
    "result_peak": " · peak VRAM {v} GiB",
    "caption_seed": "seed {seed}",
    "caption_steps": "{steps} steps",
    # Progress and the live preview (ui_preview.py)
    "progress_waiting": "Waiting in queue (position {n})",
    "progress_loading": "Loading model: {stage}",
    "progress_encoding": "Encoding the prompt",
    "progress_decoding": "Decoding",
    "progress_saving": "Saving",
    "progress_step": "Step {step} of {total}",
    "progress_starting": "Starting",
    "progress_image": "Image {k} of {n} · {desc}",
    "progress_left": " · about {s} s left",
    "preview_alt": "Live preview of the image being made",
    "preview_title": "Live preview",
    # The model cache panel (ui_cache.py)
    "cache_panel": "Model cache",
    "cache_model": "Model",
    "cache_refresh": "Refresh",
    "cache_verify": "Verify",
    "cache_repair": "Repair",
    "cache_delete": "Delete",
    "cache_confirm": "Confirm delete",
    "cache_columns": "model,status,size,layout,folder",
    "cache_summary": "**Cache:** `{base}` · {free} free on that disk. "
                     "Move it by setting `MODELSCOPE_CACHE` (or `--cache-dir`) and restarting.",
    "cache_nothing": "Nothing cached yet: the model downloads on the first **Preload model** or **Generate**.",
    "cache_confirm_named": "Delete {model}, {size}?",
    "cache_verifying": "Verifying {model}",
    "cache_repairing": "Repairing {model}",
    "cache_pick_first": "Pick a model first.",
    "cache_verify_failed": "**Verify of {model} failed:** {error}",
    "cache_not_cached": "{model} is not in the cache.",
    "cache_verify_ok": "OK: {model}: all {n} files are intact ({how}).",
    "cache_problems": "**{model}: {n} problem(s).** Press **Repair**.",
    "cache_repair_failed": "**Repair of {model} failed:** {error}",
    "cache_nothing_to_repair": "{model}: nothing needed repair.",
    "cache_redownloaded": "{model}: re-downloaded {files}",
    "cache_tick_first": "Tick **{confirm}** first: this removes the files from disk.",
    "cache_not_deleted": "**{model} not deleted:** {error}",
    "cache_deleted": "Deleted {model}: {size} freed.",
    # LoRA (ui_lora.py)
    "lora_panel": "LoRA",
    "lora_slot": "LoRA {i}",
    "lora_none": "None",
    "lora_strength": "Strength",
    "lora_refresh": "Refresh LoRA list",
    "lora_not_usable": "Not usable:",
    "lora_not_usable_reason": "not usable",
    "lora_triggers": "**{name}** trigger words: {words}",
    # The start-up timeline in the status panel (ui_startup.py)
    "startup_title": "Start-up:",
    "startup_importing": "importing the model code (torch, diffusers)",
    "startup_reading": "reading weights {pct}%",
    "startup_building": "building the pipeline",
    "startup_moving": "moving to the device {pct}%",
    "startup_warming": "warming up",
    "startup_compiling": "compiling in the background (images run eagerly meanwhile)",
    "startup_done": "{step} {s} s",
    "startup_cuda_ready": "CUDA ready",
    "startup_web_imported": "page code",
    "startup_model_imported": "model code",
    "startup_read": "weights read",
    "startup_built": "built",
    "startup_on_device": "on device",
    "startup_ready": "ready",
    "startup_page_up": "page up",
    "startup_first_image": "first image",
    "startup_compiled": "compiled blocks in use",
    "startup_compile_failed": "compile failed: eager",
}

PAGE_ZH: dict[str, str] = {
    "lang_label": "Language / 语言",
    "tab_generate": "生成",
    "tab_pnginfo": "PNG 信息",
    "cancel_download": "取消下载",
    "prompt_label": "提示词",
    "prompt_hint": "描述图片 · Ctrl+Enter（⌘+Enter）生成 · Esc 停止",
    "generate_btn": "生成",
    "stop_btn": "停止",
    "negative_label": "反向提示词（引导系数 > 0 时使用）",
    "preset_label": "尺寸预设",
    "preset_custom": "自定义",
    "width": "宽度",
    "height": "高度",
    "steps": "步数",
    "guidance": "引导系数",
    "seed_label": "种子（-1 = 随机）",
    "images_label": "图片数量",
    "settings_label": "模型与内存",
    "preload_btn": "预加载模型",
    "unload_btn": "卸载",
    "unload_to_label": "卸载时释放",
    "unload_keep_ram": "释放显存（保留在内存中）",
    "unload_free_all": "释放显存和内存",
    "low_vram_label": "低显存（从内存流式加载权重）",
    "results_label": "结果",
    "no_gpu_low_vram": "这台机器没有 GPU：低显存模式在这里不起作用（模型本来就在内存中运行）。",
    "no_gpu_unload": "这台机器没有 GPU：模型已经在内存中，所以“释放显存（保留在内存中）”在这里不起作用。"
                     "选择“释放显存和内存”来释放内存。",
    "state_unloaded": "未加载",
    "state_downloading": "下载中",
    "state_loading": "加载中",
    "state_on_cpu": "就绪（CPU / 内存）",
    "state_on_gpu": "就绪（GPU）",
    "state_offloaded": "就绪（低显存：已卸载到内存）",
    "state_error": "错误",
    "stage_download": "下载",
    "stage_read": "读取权重",
    "stage_build": "构建",
    "stage_move": "移到设备",
    "stage_quantize": "量化（仅一次）",
    "stage_warmup": "预热",
    "status_model": "模型：",
    "status_more": "详情",
    "status_low_vram_on": "低显存：开",
    "status_low_vram_off": "低显存：关",
    "status_queue": "队列：{n}",
    "status_left": "剩余 {s} 秒",
    "status_plan": "方案：{plan}",
    "status_peak": "显存峰值 {v}",
    "status_device": "设备：{device}",
    "status_last_image": "上一张图片：{s} 秒",
    "status_vram": "显存：{allocated}（设备 {used} / {total}）",
    "status_ram": "内存：进程 {rss} · 可用 {free} / {total}",
    "phase_ready": "就绪",
    "phase_loading": "加载中",
    "phase_unloaded": "未加载",
    "phase_error": "错误",
    "phase_lost": "无响应（Ray 正在重启它）",
    "replica_head": "<tr><th>副本</th><th>节点</th><th>设备</th><th>状态</th><th>队列</th><th>上一张图片</th></tr>",
    "replica_last": "{time} 用时 {s} 秒",
    "size_whole": "**{name}** 必须是整数。",
    "size_range": "**{name}** 必须在 {lo} 到 {hi} 之间，当前为 {value}。",
    "size_multiple": "**{name}** 必须是 {m} 的倍数：{value} 介于 {below} 和 {above} 之间。",
    "failure_generic": "生成失败：{detail}。模型仍然保持加载，没有保存任何内容；请重试。"
                       "如果一直失败，请点击“卸载”（释放显存和内存），再点击“预加载模型”。",
    "check_settings": "请检查设置：{error}",
    "stopped_info": "已停止：被取消的图片已丢弃。",
    "stopped_text": "已停止。没有保留图片。",
    "stopping": "正在停止…（正在生成的图片会在当前步结束后停止）",
    "nothing_to_stop": "没有可停止的任务。",
    "result_info": "{n} 张图片，用时 {s} 秒（每张 {per} 秒）{peak} · 种子 {seeds}",
    "result_peak": " · 显存峰值 {v} GiB",
    "caption_seed": "种子 {seed}",
    "caption_steps": "{steps} 步",
    "progress_waiting": "排队中（第 {n} 位）",
    "progress_loading": "正在加载模型：{stage}",
    "progress_encoding": "正在编码提示词",
    "progress_decoding": "正在解码",
    "progress_saving": "正在保存",
    "progress_step": "第 {step} 步，共 {total} 步",
    "progress_starting": "正在开始",
    "progress_image": "第 {k} 张，共 {n} 张 · {desc}",
    "progress_left": " · 约剩 {s} 秒",
    "preview_alt": "正在生成的图片的实时预览",
    "preview_title": "实时预览",
    "cache_panel": "模型缓存",
    "cache_model": "模型",
    "cache_refresh": "刷新",
    "cache_verify": "校验",
    "cache_repair": "修复",
    "cache_delete": "删除",
    "cache_confirm": "确认删除",
    "cache_columns": "模型,状态,大小,布局,文件夹",
    "cache_summary": "**缓存：** `{base}` · 该磁盘可用 {free}。"
                     "设置 `MODELSCOPE_CACHE`（或 `--cache-dir`）并重启即可移动它。",
    "cache_nothing": "还没有缓存：模型会在第一次 **预加载模型** 或 **生成** 时下载。",
    "cache_confirm_named": "删除 {model}（{size}）？",
    "cache_verifying": "正在校验 {model}",
    "cache_repairing": "正在修复 {model}",
    "cache_pick_first": "请先选择一个模型。",
    "cache_verify_failed": "**{model} 校验失败：** {error}",
    "cache_not_cached": "{model} 不在缓存中。",
    "cache_verify_ok": "正常：{model}：全部 {n} 个文件完好（{how}）。",
    "cache_problems": "**{model}：{n} 个问题。** 请点击 **修复**。",
    "cache_repair_failed": "**{model} 修复失败：** {error}",
    "cache_nothing_to_repair": "{model}：无需修复。",
    "cache_redownloaded": "{model}：已重新下载 {files}",
    "cache_tick_first": "请先勾选 **{confirm}**：这会从磁盘删除文件。",
    "cache_not_deleted": "**{model} 未删除：** {error}",
    "cache_deleted": "已删除 {model}：释放了 {size}。",
    "lora_panel": "LoRA",
    "lora_slot": "LoRA {i}",
    "lora_none": "无",
    "lora_strength": "强度",
    "lora_refresh": "刷新 LoRA 列表",
    "lora_not_usable": "不可用：",
    "lora_not_usable_reason": "不可用",
    "lora_triggers": "**{name}** 触发词：{words}",
    "startup_title": "启动：",
    "startup_importing": "正在导入模型代码（torch、diffusers）",
    "startup_reading": "正在读取权重 {pct}%",
    "startup_building": "正在构建管线",
    "startup_moving": "正在移到设备 {pct}%",
    "startup_warming": "正在预热",
    "startup_compiling": "正在后台编译（编译完成前，图片不经编译照常生成）",
    "startup_done": "{step} {s} 秒",
    "startup_cuda_ready": "CUDA 就绪",
    "startup_web_imported": "页面代码",
    "startup_model_imported": "模型代码",
    "startup_read": "权重已读取",
    "startup_built": "已构建",
    "startup_on_device": "已在设备上",
    "startup_ready": "就绪",
    "startup_page_up": "页面已启动",
    "startup_first_image": "第一张图片",
    "startup_compiled": "已使用编译后的模块",
    "startup_compile_failed": "编译失败：不经编译运行",
}

# Every table of the page's words as (English, Chinese), put together here and nowhere else.
PARTS = ((PAGE_EN, PAGE_ZH), (MORE_EN, MORE_ZH), (EXPLORE_EN, EXPLORE_ZH), (PROMPT_EN, PROMPT_ZH),
         (EN_INPUTS, ZH_INPUTS), (QUEUE_EN, QUEUE_ZH), (MODELS_EN, MODELS_ZH), (EDIT_EN, EDIT_ZH),
         (HIRES_EN, HIRES_ZH), (HISTORY_EN, HISTORY_ZH), (PNGINFO_EN, PNGINFO_ZH), (CONTROLNET_EN, CONTROLNET_ZH))


def merged(tables: Iterable[dict[str, str]]) -> dict[str, str]:
    """One language's tables as one; a key in two of them is refused (with update(), the later
    table's words would silently win)."""
    out: dict[str, str] = {}
    for table in tables:
        twice = sorted(out.keys() & table.keys())
        if twice:
            raise ValueError(f"page text keys in two tables: {twice}")
        out.update(table)
    return out


EN = merged(en for en, _ in PARTS)
ZH = merged(zh for _, zh in PARTS)
TABLES = {"en": EN, "zh": ZH}


@functools.cache
def page_i18n() -> gr.I18n:
    """The browser's table for each of Gradio's locales (zh-TW reads the Simplified one: see FRONTEND_LOCALES)."""
    import gradio as gr
    return gr.I18n(en=EN, **{"zh-CN": ZH, "zh-TW": ZH})


def label(key: str) -> I18nData:
    """A static text the browser translates (a label, info, placeholder, button, choice, title)."""
    if key not in EN:
        raise KeyError(f"no page text {key!r}")
    return page_i18n()(key)


def text(key: str, lang: str = "en", **parts: Any) -> str:
    """A text the server builds, in `lang` ("en" or "zh"), its {parts} filled."""
    template = TABLES.get(lang, EN)[key]
    return template.format(**parts) if parts else template


def request_lang(request: gr.Request | None) -> str:
    """The language of the page that sent `request`: the switch's cookie when the page has one,
    else the browser's Accept-Language; "en" without a request (a direct call from a test)."""
    if request is None:
        return "en"
    headers = getattr(request, "headers", None) or {}
    return page_language(getattr(request, "cookies", None) or {},
                         headers.get("accept-language") if hasattr(headers, "get") else None)


STATE_KEYS = {
    LoadState.UNLOADED: "state_unloaded", LoadState.DOWNLOADING: "state_downloading", LoadState.LOADING: "state_loading",
    LoadState.ON_CPU: "state_on_cpu", LoadState.ON_GPU: "state_on_gpu",
    LoadState.OFFLOADED: "state_offloaded", LoadState.ERROR: "state_error",
}
STAGE_KEYS = {LoadStage.DOWNLOAD: "stage_download", LoadStage.READ: "stage_read", LoadStage.BUILD: "stage_build",
              LoadStage.MOVE: "stage_move", LoadStage.QUANTIZE: "stage_quantize", LoadStage.WARMUP: "stage_warmup"}


def stage_text(status: Status, lang: str = "en") -> str:
    """The load stage in `lang`, else the state's own name (a stage-less load)."""
    if status.stage is not None:
        return text(STAGE_KEYS[status.stage], lang) if status.stage in STAGE_KEYS else status.stage.value
    return text(STATE_KEYS[status.state], lang)
