"""The Simplified Chinese of the refusals that came with hires fix and Upscale, Variety, the prompt
enhancer, the X/Y/Z grid, wildcards and batch count (issues 32 and 33), in i18n.py's table shapes:
(English pattern, fullmatched; Chinese template with the same named parts). Stdlib only (core);
i18n.py adds these to its tables and calls `nested_zh` for the details that carry another refusal
inside them (a grid cell's, an axis value's) or a reason from a short list of their own.
"""
from __future__ import annotations

import re
from typing import Callable

# InvalidRequest's detail (after "<field>: ")
INVALID_MORE: list[tuple[str, str]] = [
    # hires fix and Upscale (hires_request, web/hires_fields)
    (r"must be a finite number, got (?P<v>.+)", "必须是有限的数字，收到的是 {v}"),
    (r"must be an object like (?P<e>\{.+\})", "必须是像 {e} 这样的对象"),
    (r"must be true or false", "必须是 true 或 false"),
    (r"must be 0 \(scale by upscaling_resize\) or 1 \(to upscaling_resize_w/h\)",
     "必须是 0（按 upscaling_resize 的倍数放大）或 1（放大到 upscaling_resize_w/h）"),
    (r"must be a size in px with resize_mode 1", "在 resize_mode 为 1 时必须是以像素计的尺寸"),
    (r"is required \(a base64 PNG, JPEG or WebP image\)", "为必填项（base64 编码的 PNG、JPEG 或 WebP 图片）"),
    # the prompt enhancer (enhance_request)
    (r"must be \"text\", got (?P<v>.+)", "必须是 \"text\"，收到的是 {v}"),
    # the X/Y/Z grid (explore/axes, explore/grid)
    (r"must be one of (?P<k>.+), got (?P<v>.+)", "必须是 {k} 之一，收到的是 {v}"),
    (r"must be a list of values or a text such as \"1-5\" or \"a, b, c\"",
     "必须是值的列表，或 \"1-5\"、\"a, b, c\" 这样的文字"),
    (r"has no values", "没有任何值"),
    (r"has more than (?P<n>\d+) values \(the grid's limit\)", "超过 {n} 个值（网格的上限）"),
    (r"lora_strength needs a <lora:NAME:1> tag in the base prompt", "lora_strength 需要基础提示词中有 <lora:名称:1> 标签"),
    (r"Prompt S/R: (?P<s>.+) \(the first value\) is not in the prompt or the negative prompt",
     "提示词搜索/替换：{s}（第一个值）既不在提示词中，也不在反向提示词中"),
    (r"must be a JSON object \(a /generate body\)", "必须是 JSON 对象（一个 /generate 请求体）"),
    (r"must be 1: a grid makes one image per cell", "必须为 1：网格每格生成一张图片"),
    (r"is required when y or z is given", "在给出 y 或 z 时为必填项"),
    (r"has (?P<n>\d+) cells \((?P<dims>[\d x]+)\); at most (?P<max>\d+) \(--grid-max-cells\)",
     "有 {n} 格（{dims}）；最多 {max} 格（--grid-max-cells）"),
    # wildcards and dynamic prompts (explore/wildcards)
    (r"the wildcard __(?P<n>.+)__ has no file (?P<f>.+) in the wildcards folder", "通配符 __{n}__ 在通配符文件夹中没有文件 {f}"),
    (r"the wildcard file (?P<f>.+) is (?P<size>\d+) bytes; at most (?P<max>\d+)", "通配符文件 {f} 有 {size} 字节；最多 {max} 字节"),
    (r"the wildcard file (?P<f>.+) is not UTF-8 text", "通配符文件 {f} 不是 UTF-8 文本"),
    (r"the wildcard file (?P<f>.+) cannot be read: (?P<e>.+)", "无法读取通配符文件 {f}：{e}"),
    (r"the wildcard file (?P<f>.+) has no lines", "通配符文件 {f} 没有任何行"),
    (r"expands to more than (?P<n>\d+) characters", "展开后超过 {n} 个字符"),
    (r"nests choices or wildcards more than (?P<n>\d+) levels deep", "选项或通配符的嵌套超过 {n} 层"),
    # History's size filter (store/history)
    (r"must be square, landscape, portrait or WIDTHxHEIGHT, got (?P<v>.+)",
     "必须是 square、landscape、portrait 或 宽x高，收到的是 {v}"),
]

# Whole messages of the other errors
MESSAGES_MORE: list[tuple[str, str]] = [
    (r"The upscaler (?P<n>.+) can no longer be read: (?P<e>.+)", "放大器 {n} 已无法读取：{e}"),
    (r"The text encoder's answer was empty\.", "文本编码器的回答是空的。"),
    (r"The enhancer endpoint (?P<u>\S+) answered (?P<c>\d+): (?P<t>.*)", "提示词优化服务 {u} 返回了 {c}：{t}"),
    (r"The enhancer endpoint (?P<u>\S+) sent a chunk that is not OpenAI's: (?P<t>.*)",
     "提示词优化服务 {u} 发来的数据块不是 OpenAI 的格式：{t}"),
    (r"The enhancer endpoint (?P<u>\S+) cannot be reached: (?P<e>.+)", "无法连接提示词优化服务 {u}：{e}"),
    (r"The enhancer endpoint (?P<u>\S+) answered nothing\.", "提示词优化服务 {u} 没有给出任何回答。"),
    (r"The prompt enhancer gave no answer within (?P<s>\S+) s\.", "提示词优化器在 {s} 秒内没有给出回答。"),
    (r"Enhance on the loaded text encoder needs --backend local\.", "在已加载的文本编码器上优化提示词需要 --backend local。"),
    # A warning of the grid (explore/grid), shown by status_text
    (r"The grid picture could not be saved: (?P<e>.+)", "无法保存网格图：{e}"),
]

HINTS_MORE: list[tuple[str, str]] = [
    (r"Pick it again from the list \(Refresh\), or use Lanczos\.", "请从列表中重新选择（刷新），或使用 Lanczos。"),
    (r"Try again \(another seed\), or edit the prompt\.", "请重试（换一个种子），或修改提示词。"),
    (r"Check --enhancer-url and --enhancer-model \(is the model pulled\?\)\.",
     "请检查 --enhancer-url 和 --enhancer-model（模型是否已经拉取？）。"),
    (r"Check --enhancer-url: it must be OpenAI-compatible\.", "请检查 --enhancer-url：它必须兼容 OpenAI。"),
    (r"Start it \(ollama serve, LM Studio's server\), or check --enhancer-url\.",
     "请启动它（ollama serve，或 LM Studio 的服务器），或检查 --enhancer-url。"),
    (r"Try again, or another model\.", "请重试，或换一个模型。"),
    (r"Start with --backend local, or give an endpoint with --enhancer-url and --enhancer-model\.",
     "请以 --backend local 启动，或用 --enhancer-url 和 --enhancer-model 指定一个服务。"),
    (r"Check --model, or pass a ModelScope id such as (?P<m>\S+)\.", "请检查 --model，或传入 ModelScope 模型 ID，例如 {m}。"),
]

# An axis value refused (explore/axes: "<the value's repr> <why>")
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_AXIS_VALUE = re.compile(rf"(?P<item>{_QUOTED}) (?P<why>.+)", re.DOTALL)
_AXIS_WHY: list[tuple[str, str]] = [
    (r"must be text", "必须是文字"),
    (r"must be a size like 1024x768", "必须是像 1024x768 这样的尺寸"),
    (r"must be a whole number or a range like 1-5, 1-10 \(\+2\) or 1-9 \[3\]", "必须是整数，或 1-5、1-10 (+2)、1-9 [3] 这样的范围"),
    (r"has a step that never reaches its end", "的步长永远到不了终点"),
    (r"makes (?P<n>\d+) values; the grid takes at most (?P<room>\d+) more", "会产生 {n} 个值；网格最多还能容纳 {room} 个"),
    (r"must be a finite number", "必须是有限的数字"),
    (r"must be a number or a range like 0-1 \(\+0\.5\) or 0-1 \[3\]", "必须是数字，或 0-1 (+0.5)、0-1 [3] 这样的范围"),
    (r"asks for (?P<n>\d+) values; the grid takes 1 to (?P<room>\d+) more", "要求 {n} 个值；网格还能容纳 1 到 {room} 个"),
]
# A wildcard name refused (explore/wildcards.name_problem)
_WILDCARD = re.compile(r"the wildcard __(?P<n>.+)__ is refused: (?P<why>.+)", re.DOTALL)
_WILDCARD_WHY: list[tuple[str, str]] = [
    (r"a name has at most (?P<n>\d+) characters", "名称最多 {n} 个字符"),
    (r"it is an absolute path", "它是绝对路径"),
    (r"it leaves the wildcards folder", "它超出了通配符文件夹"),
]
# A refusal said of the axis value or grid cell that made it (explore/grid._reworded): "<what>: <field>: <detail>"
_OF_VALUE = re.compile(rf"(?P<what>{_QUOTED}): (?P<inner>[\w.\[\]]+: .+)", re.DOTALL)
_OF_CELL = re.compile(r"the cell (?P<where>.+?): (?P<inner>[\w.\[\]]+: .+)", re.DOTALL)


def _fill(table: list[tuple[str, str]], text: str) -> str | None:
    for pattern, template in table:
        m = re.fullmatch(pattern, text, re.DOTALL)
        if m is not None:
            return template.format(**{k: v or "" for k, v in m.groupdict().items()})
    return None


def nested_zh(detail: str, detail_zh: Callable[[str], str | None]) -> str | None:
    """The Chinese of a detail that holds a reason of its own or another refusal ("<field>:
    <detail>", translated by `detail_zh`, i18n's own detail translator); None when none fits."""
    m = _AXIS_VALUE.fullmatch(detail)
    why = _fill(_AXIS_WHY, m["why"]) if m else None
    if why is not None:
        return f"{m['item']} {why}"
    m = _WILDCARD.fullmatch(detail)
    why = _fill(_WILDCARD_WHY, m["why"]) if m else None
    if why is not None:
        return f"通配符 __{m['n']}__ 被拒绝：{why}"
    for pattern, head in ((_OF_VALUE, "what"), (_OF_CELL, "where")):
        m = pattern.fullmatch(detail)
        if m is None:
            continue
        field, _, inner = m["inner"].partition(": ")
        inner_zh = detail_zh(inner)
        if inner_zh is not None:
            return (f"{m['what']}：" if head == "what" else f"格子 {m['where']}：") + f"{field}: {inner_zh}"
    return None
