"""The page's newer words (issue 28), in English and Simplified Chinese: put into page_text's
tables (which tests/test_page_text.py checks key by key), kept here so that file stays one size.
Stdlib only, as page_text is at import: the starting page (web.ui_starting) reads them without gradio.
Plus the LoRA folder's refusal reasons (store.loras writes them in English) in Chinese."""
from __future__ import annotations

import re

MORE_EN: dict[str, str] = {
    # The status line while the server does not answer (ui_offline: the browser writes it)
    "server_unreachable": "Server not reachable",
    "server_unreachable_hint": "The page retries by itself; your settings and results stay in this browser.",
    # The device before a load (ui_status)
    "status_device_unloaded": "Device: not loaded (will use {device})",
    "device_auto": "the GPU if there is one, else the CPU",
    # The load's own timeline (ui_startup): times since the load began, not since the process started
    "startup_load_title": "Model load:",
    # A second Generate click while this browser's job runs (ui_status)
    "generate_queued": "Queued: it starts when your running job ends ({n} of yours waiting or running).",
    # The starting page (ui_starting)
    "starting_title": "Z-Image-Turbo: starting",
    "starting_sentence": "Z-Image-Turbo is starting; this page opens by itself when it is ready.",
    "starting_now": "Now:",
}
MORE_ZH: dict[str, str] = {
    "server_unreachable": "服务器无法连接",
    "server_unreachable_hint": "页面会自动重试；你的设置和结果仍保存在此浏览器中。",
    "status_device_unloaded": "设备：未加载（将使用 {device}）",
    "device_auto": "GPU（如有），否则 CPU",
    "startup_load_title": "模型加载：",
    "generate_queued": "已排队：在你正在运行的任务结束后开始（你有 {n} 个任务在等待或运行）。",
    "starting_title": "Z-Image-Turbo：正在启动",
    "starting_sentence": "Z-Image-Turbo 正在启动；准备好后此页面会自动打开。",
    "starting_now": "当前：",
}

# store.loras' reasons for a file it will not use -> the Chinese (patterns over the whole reason).
_LORA_WHY_ZH = [
    (r"only (?P<b>\d+) bytes", "只有 {b} 字节"),
    (r"its header claims (?P<b>\d+) bytes", "文件头声称有 {b} 字节"),
    (r"its header is not JSON", "文件头不是 JSON"),
    (r"its header is not an object", "文件头不是对象"),
    (r"tensor (?P<t>.+) has no offsets", "张量 {t} 没有偏移量"),
]
_LORA_REASONS_ZH = [
    (r"pickle files can run code; convert it to \.safetensors", "pickle 文件可以执行代码，请转换为 .safetensors"),
    (r"it is a link to a file outside the LoRA folder", "它链接到 LoRA 文件夹之外的文件"),
    (r"(?P<n>.+) is not a safetensors file \((?P<why>.+)\)\.", "{n} 不是 safetensors 文件（{why}）。"),
    (r"(?P<n>.+) is truncated \(its header is cut short\)\.", "{n} 不完整（文件头被截断）。"),
    (r"(?P<n>.+) is truncated: it has (?P<size>\d+) bytes, its header needs (?P<need>\d+)\.",
     "{n} 不完整：只有 {size} 字节，文件头需要 {need} 字节。"),
    (r"cannot be read: (?P<e>.+)", "无法读取：{e}"),
]


def _fill(table: list[tuple[str, str]], value: str) -> str | None:
    for pattern, template in table:
        m = re.fullmatch(pattern, value, re.DOTALL)
        if m:
            parts = {k: (_fill(_LORA_WHY_ZH, v) or v) if k == "why" else v for k, v in m.groupdict().items()}
            return template.format(**parts)
    return None


def lora_reason(reason: str, lang: str) -> str:
    """Why the LoRA folder's file is not used, in `lang` (an unknown reason stays as it is)."""
    return (_fill(_LORA_REASONS_ZH, reason) or reason) if lang == "zh" else reason
