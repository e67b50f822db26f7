"""Languages: which one a request asks for (Accept-Language), and the Simplified Chinese text of the
app's error messages and hints. Stdlib only (core layer): the page's own label tables (gr.I18n)
go beside these in the page round.

Errors keep their English `code`; only `message` and `hint` are translated. Messages are built
with dynamic parts at the raise sites (a field, a number, a file name), so the catalog matches the
English text and fills a Chinese template with the same parts:
- ERROR_ZH: one Chinese sentence for every error code (tests/test_i18n.py walks every ZImageError
  subclass). A message no pattern knows becomes that sentence with the English text after it, so a
  Chinese reader always gets Chinese first and loses no detail.
- MESSAGES_ZH / INVALID_ZH / HINTS_ZH: (English pattern, Chinese template) for the messages the app
  raises; InvalidRequest's "<field>: <detail>" keeps the field name as sent. The refusals of hires
  fix, Variety, the enhancer, the grid and wildcards are i18n_features' (added to these tables).
"""
from __future__ import annotations

import re

from .i18n_features import HINTS_MORE, INVALID_MORE, MESSAGES_MORE, nested_zh

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "zimage-lang"          # set by the page's switch (web/page/ui_page.LANG_JS)
# Every Chinese tag counts as zh: Simplified is the only Chinese table, and a zh-TW reader reads it
# more easily than English (the page round may add zh-Hant).
_TAG = re.compile(r"\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9](?:\.[0-9]{0,3})?))?\s*")


def page_language(cookies, accept_language: str | None) -> str:
    """The page's language for a request: the switch's cookie when set, else Accept-Language."""
    chosen = cookies.get(LANG_COOKIE) if hasattr(cookies, "get") else None
    return chosen if chosen in LANGUAGES else language_of(accept_language)


def language_of(accept_language: str | None) -> str:
    """The supported language the header prefers most ("zh" or "en"), by q-value, the first listed
    on a tie; "en" when the header is absent, malformed or names neither."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for part in (accept_language or "")[:1000].split(","):
        m = _TAG.fullmatch(part)
        if m is None:
            continue
        q = float(m[2]) if m[2] is not None else 1.0
        primary = m[1].split("-")[0].lower()
        if primary in LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best


# One sentence per error code. Codes from zimage/errors.py and the web layer's own errors, plus the
# guard's refusals (security.GuardMiddleware answers these codes without an error class).
ERROR_ZH: dict[str, str] = {
    "internal_error": "服务器内部错误。",
    "invalid_request": "请求中的某个字段缺失、类型错误或超出范围。",
    "controlnet_refused": "当前的模型放置方式下无法使用 ControlNet。",
    "enhancer_failed": "提示词优化器无法给出结果。",
    "enhancer_timeout": "提示词优化器超时，没有给出结果。",
    "bad_body": "请求体不是有效的 JSON 对象。",
    "queue_full": "生成队列已满。",
    "model_unavailable": "找不到或无法下载模型。",
    "model_load_failed": "模型文件存在，但无法加载。",
    "cache_corrupt": "缓存中的模型文件已损坏。",
    "model_file_unsupported": "该文件不是本应用能加载的 Z-Image 模型文件。",
    "model_part_missing": "单文件模型缺少一个部分（文本编码器、VAE 或配置与分词器）。",
    "out_of_memory": "内存不足。",
    "cancelled": "已停止生成。",
    "illegal_transition": "状态机拒绝了这次状态切换（程序错误）。",
    "shutting_down": "服务器正在关闭。",
    "unsupported_media_type": "请求体的 Content-Type 不受支持。",
    "body_too_large": "请求体过大。",
    "model_in_use": "这些文件正被已加载的模型使用。",
    "disk_full": "磁盘空间不足。",
    "download_cancelled": "下载已取消。",
    "replica_failed": "Ray Serve 副本失败，重试也失败了。",
    "backend_unavailable": "无法连接 Ray 集群，或部署未能启动。",
    "worker_crashed": "模型进程意外结束，正在重新启动；请重新生成这张图片。",
    "not_found": "找不到请求的内容。",
    "generation_failed": "生成失败。",
    "upscaler_failed": "无法读取该放大模型文件。",
    "upscaler_not_found": "找不到该放大器。",
    "confirmation_mismatch": "确认的模型与请求的模型不一致。",
    "lora_error": "无法使用该 LoRA。",
    "lora_name_refused": "LoRA 名称被拒绝。",
    "lora_not_found": "找不到该 LoRA。",
    "lora_unreadable": "无法读取该 LoRA 文件。",
    "lora_mismatch": "该 LoRA 不适用于此模型。",
    "lora_needs_full_weights": "LoRA 需要全精度权重。",
    "lora_mode_unsupported": "当前模式下无法使用 LoRA。",
    "lora_ambiguous": "LoRA 名称对应多个文件。",
    "history_path_refused": "历史记录中的该项被拒绝：它不是输出文件夹里的图片。",
    "history_item_not_found": "历史记录中找不到该图片。",
    "history_item_changed": "该图片在列出之后已被更改或删除，未做任何删除。",
    "history_busy": "历史记录索引正被另一个程序使用。",
    "queue_busy": "保存的队列正被另一个程序使用。",
    "queue_job_not_found": "队列中找不到该任务。",
    "queue_job_active": "该任务已在排队或运行中。",
    "queue_job_unreadable": "该任务无法再次运行。",
    "vram_budget_too_small": "显存预算太小。",
    "uploads_refused": "此页面不接受文件上传。",
    "upload_quota": "等待读取的上传过多。",
    "unauthorized": "需要登录。",
    "bad_host": "Host 请求头格式错误。",
    "forbidden_host": "不提供此 Host 的服务。",
    "forbidden_origin": "不允许来自该来源的请求。",
}

# InvalidRequest's detail (after "<field>: "), fullmatched.
INVALID_ZH: list[tuple[str, str]] = [
    (r"is required", "为必填项"),
    (r"must not be empty", "不能为空"),
    (r"must be an integer, got (?P<t>.+)", "必须是整数，收到的是 {t}"),
    (r"must be between (?P<lo>\S+) and (?P<hi>\S+), got (?P<v>.+)", "必须在 {lo} 到 {hi} 之间，收到的是 {v}"),
    (r"must be a multiple of (?P<m>\d+), got (?P<v>.+)", "必须是 {m} 的倍数，收到的是 {v}"),
    (r"must be a string, got (?P<t>.+)", "必须是字符串，收到的是 {t}"),
    (r"must be a number, got (?P<t>.+)", "必须是数字，收到的是 {t}"),
    (r"must be true or false, got (?P<t>.+)", "必须是 true 或 false，收到的是 {t}"),
    (r"must be one of the choices, got (?P<t>.+)", "必须是可选项之一，收到的是 {t}"),
    (r"must be a list of the choices, got (?P<t>.+)", "必须是可选项组成的列表，收到的是 {t}"),
    (r"is too long \((?P<n>\d+) characters, at most (?P<max>\d+)\)", "太长（{n} 个字符，最多 {max} 个）"),
    (r"must not contain NUL characters", "不能包含 NUL 字符"),
    (r"unknown upscaler (?P<n>.+) \(known: (?P<k>.*)\)", "未知的放大器 {n}（可用：{k}）"),
    (r"must be 0 \(off\) or between (?P<lo>\S+) and (?P<hi>\S+), got (?P<v>.+)", "必须为 0（关闭）或在 {lo} 到 {hi} 之间，收到的是 {v}"),
    (r"the upscaled picture would be (?P<s>\S+): each side at most (?P<m>\d+) px \(the first pass is (?P<f>\S+)\)",
     "放大后的图片将是 {s}：每边最多 {m} 像素（第一遍为 {f}）"),
    (r"must be valid Unicode text \(a lone UTF-16 surrogate at character (?P<i>\d+)\)",
     "必须是有效的 Unicode 文本（第 {i} 个字符是孤立的 UTF-16 代理项）"),
    (r"the key name (?P<k>.+) must be valid Unicode text \(a lone UTF-16 surrogate at character (?P<i>\d+)\)",
     "键名 {k} 必须是有效的 Unicode 文本（第 {i} 个字符是孤立的 UTF-16 代理项）"),
    (r"the LoRA tag (?P<tag>.+) has no name \(write <lora:NAME:1>\)", "LoRA 标签 {tag} 没有名称（请写 <lora:名称:1>）"),
    (r"the LoRA tag (?P<tag>.+) has more than one strength \(write (?P<w>.+); Z-Image has one strength per LoRA\)",
     "LoRA 标签 {tag} 有多个强度（请写 {w}；Z-Image 每个 LoRA 只有一个强度）"),
    (r"the LoRA tag (?P<tag>.+) has a strength that is not a number \(write (?P<w>.+)\)",
     "LoRA 标签 {tag} 的强度不是数字（请写 {w}）"),
    (r"the strength of LoRA (?P<n>.+) must be between (?P<lo>\S+) and (?P<hi>\S+), got (?P<v>.+)",
     "LoRA {n} 的强度必须在 {lo} 到 {hi} 之间，收到的是 {v}"),
    (r"a <lora:\.\.\. tag is not closed with '>' \(write <lora:NAME:1>\)", "<lora:... 标签没有用 '>' 结束（请写 <lora:名称:1>）"),
    (r"the strength of (?P<n>.+) must be a finite number", "{n} 的强度必须是有限的数字"),
    (r"must be a JSON object", "必须是 JSON 对象"),
    (r"must be a JSON object \(or empty\)", "必须是 JSON 对象（或为空）"),
    (r"must be a JSON object with a \"data\" list", "必须是带有 \"data\" 列表的 JSON 对象"),
    (r"must be a JSON object of keyword arguments", "必须是关键字参数组成的 JSON 对象"),
    (r"is not a known field \(known: (?P<k>.+)\)", "不是已知字段（已知字段：{k}）"),
    (r"must be a finite number", "必须是有限的数字"),
    (r"must be a date written YYYY-MM-DD, got (?P<v>.+)", "必须是 YYYY-MM-DD 格式的日期，收到的是 {v}"),
    (r"must be -1 \(random\) or an integer 0-(?P<max>\d+)", "必须是 -1（随机）或 0-{max} 之间的整数"),
    (r"must be an integer >= 1", "必须是大于等于 1 的整数"),
    (r"must look like 1024x1024 or auto, got (?P<v>.+)", "格式应为 1024x1024 或 auto，收到的是 {v}"),
    (r"each side must be (?P<lo>\d+)-(?P<hi>\d+) px, got (?P<v>.+)", "每边必须在 {lo}-{hi} 像素之间，收到的是 {v}"),
    (r"\(batch_size x n_iter\) must be between (?P<lo>\S+) and (?P<hi>\S+), got (?P<v>.+)",
     "（batch_size x n_iter）必须在 {lo} 到 {hi} 之间，收到的是 {v}"),
    (r"is not valid UTF-8 text", "不是有效的 UTF-8 文本"),
    (r"extends no side \(give left, right, top or bottom in px\)", "没有扩展任何一边（请给出 left、right、top 或 bottom 的像素数）"),
    (r"(?P<s>left|right|top|bottom) must be 0-(?P<max>\d+) px, got (?P<v>.+)", "{s} 必须在 0-{max} 像素之间，收到的是 {v}"),
    (r"would make a (?P<w>\d+)x(?P<h>\d+) canvas; at most (?P<m>\d+x\d+)", "会得到 {w}x{h} 的画布；最大为 {m}"),
    (r"must be b64_json or url", "必须是 b64_json 或 url"),
    (r"must be \"cpu\" \(keep in RAM\) or \"none\"(?:, got (?P<v>.+))?", "必须是 \"cpu\"（保留在内存中）或 \"none\""),
    (r"must be 1-(?P<n>\d+) visible ASCII characters", "必须是 1-{n} 个可见 ASCII 字符"),
    (r"must be a list of the event's (?P<n>\d+) input values", "必须是该事件 {n} 个输入值组成的列表"),
    (r"has (?P<n>\d+) values; this event takes (?P<want>.+)", "有 {n} 个值；该事件需要 {want} 个"),
    (r"must be a string of 1-(?P<n>\d+) characters", "必须是 1-{n} 个字符的字符串"),
    (r"give exactly one session_hash", "请只给出一个 session_hash"),
    (r"(?P<v>.+) is not an event of this page", "{v} 不是此页面的事件"),
    (r"(?P<v>.+) is not a component of this page", "{v} 不是此页面的组件"),
    (r"(?P<v>.+) is not an image this server generated", "{v} 不是本服务器生成的图片"),
    # The Edit tab's and the ControlNet panel's (zimage/web/page/ui_edit.py, ui_controlnet.py)
    (r"Add an image first: drop, paste or send one to the Edit tab\.", "请先添加一张图片：拖放、粘贴或发送一张到“编辑”标签页。"),
    (r"Paint over the part of the image to change \(Inpaint mode\), or choose Image to image\.",
     "请涂抹图片中要改变的部分（局部重绘模式），或选择“图生图”。"),
    (r"is missing: drop one in the ControlNet panel, or untick Use ControlNet",
     "缺失：请在 ControlNet 面板中放入一张，或取消勾选“启用 ControlNet”"),
    (r"ControlNet works with text to image, inpaint and outpaint, not with image to image; add a mask \(inpaint\), "
     r"or send the control image without an init image",
     "ControlNet 可用于文生图、局部重绘和扩图，不能用于图生图；请添加蒙版（局部重绘），或只发送控制图而不发送初始图片"),
]

# Whole messages of the other errors, fullmatched.
MESSAGES_ZH: list[tuple[str, str]] = [
    (r"The generation queue is full \((?P<n>\d+) jobs waiting\)\.", "生成队列已满（{n} 个任务在等待）。"),
    (r"Too many uploads waiting: (?P<who>one client|all clients together) may keep (?P<mb>\S+) MB of images "
     r"that no event has read yet\.", "等待读取的上传过多：每个客户端（或所有客户端合计）最多可保留 {mb} MB 尚未被读取的图片。"),
    (r"The server is shutting down\.", "服务器正在关闭。"),
    (r"The kept queue (?P<f>.+) is in use by another program\.", "保存的队列 {f} 正被另一个程序使用。"),
    (r"No kept job (?P<id>\d+) in the queue\.", "队列中没有任务 {id}。"),
    (r"Job (?P<id>\d+) is already queued or running\.", "任务 {id} 已在排队或运行中。"),
    (r"Job (?P<id>\d+) cannot be run again: (?P<why>.+)\.", "任务 {id} 无法再次运行：{why}。"),
    (r"The generation was stopped\.", "已停止生成。"),
    (r"Stopped after (?P<k>\d+) of (?P<n>\d+) images; the finished ones were kept\.",
     "已在 {n} 张中的第 {k} 张完成后停止；已完成的图片已保留。"),
    (r"The download was cancelled\.", "下载已取消。"),
    (r"Not deleted: the request names (?P<m>.+) but (?P<c>.+) was confirmed\.", "未删除：请求的是 {m}，但确认的是 {c}。"),
    (r"LoRA name (?P<n>.+) refused: (?P<why>.+)\.", "LoRA 名称 {n} 被拒绝：{why}。"),
    (r"No LoRA named (?P<n>.+) in the LoRA folder\.", "LoRA 文件夹中没有名为 {n} 的 LoRA。"),
    (r"LoRA (?P<n>.+) cannot be used with (?P<mode>.+) yet\.", "LoRA {n} 暂时不能与 {mode} 一起使用。"),
    (r"LoRA name (?P<n>.+) fits (?P<k>\d+) files: (?P<c>.+)\.", "LoRA 名称 {n} 对应 {k} 个文件：{c}。"),
    (r"LoRA (?P<n>.+) refused: pickle files can run code; convert it to \.safetensors\.",
     "LoRA {n} 被拒绝：pickle 文件可以执行代码，请转换为 .safetensors。"),
    (r"LoRA (?P<n>.+) holds no tensors\.", "LoRA {n} 不含任何张量。"),
    (r"The request body is larger than (?P<kb>\d+) KB\.", "请求体超过 {kb} KB。"),
    (r"Content-Type must be application/json, got (?P<t>.+)\.", "Content-Type 必须是 application/json，收到的是 {t}。"),
    (r"The body is not valid JSON: it is nested too deeply\.", "请求体不是有效的 JSON：嵌套太深。"),
    (r"The body is not valid JSON: (?P<e>.+)\.", "请求体不是有效的 JSON：{e}。"),
    (r"This page has no API endpoint named (?P<n>.+)\.", "此页面没有名为 {n} 的 API 端点。"),
    (r"No such component function on this page\.", "此页面没有这个组件函数。"),
    (r"No events are waiting for this session\.", "此会话没有等待中的事件。"),
    (r"No event (?P<e>.+) is waiting\.", "没有等待中的事件 {e}。"),
    (r"No such file on this page\.", "此页面没有这个文件。"),
    (r"Not authenticated\.", "未登录。"),
    (r"This page takes no file uploads\.", "此页面不接受文件上传。"),
    (r"The generation failed: (?P<e>.+)", "生成失败：{e}"),
    (r"Model folder not found: (?P<p>.+)", "找不到模型文件夹：{p}"),
    (r"Model file not found: (?P<p>.+)", "找不到模型文件：{p}"),
    (r"(?P<f>.+) is a pickle file, which can run code when loaded: it is never loaded\.",
     "{f} 是 pickle 文件，加载时可以执行代码：永远不会加载它。"),
    (r"(?P<f>.+) is (?P<what>.+), not a Z-Image diffusion model \(DiT\)\.", "{f} 不是 Z-Image 扩散模型（DiT）（{what}）。"),
    (r"No (?P<part>text encoder|VAE|vae) found for (?P<f>.+) \((?P<w>\d+) wide\)\.",
     "找不到 {f} 所需的 {part}（宽度 {w}）。"),
    (r"No Z-Image configs and tokenizer on this computer for (?P<m>.+)\.", "本机没有 {m} 的 Z-Image 配置和分词器。"),
    (r"(?P<flag>--text-encoder|--vae) (?P<f>.+) does not fit this model \((?P<have>\d+) wide, the DiT needs (?P<need>\d+)\)\.",
     "{flag} {f} 与此模型不匹配（宽度 {have}，DiT 需要 {need}）。"),
    (r"(?P<flag>--text-encoder|--vae) (?P<f>.+) is not a (?P<part>.+) for Z-Image\.", "{flag} {f} 不是 Z-Image 的 {part}。"),
    (r"(?P<flag>--text-encoder|--vae) (?P<f>.+) does not exist\.", "{flag} {f} 不存在。"),
    (r"(?P<m>.+) has no model files on the hub\.", "模型库中没有 {m} 的模型文件。"),
    (r"(?P<m>.+) is neither a folder nor a ModelScope id \(owner/name\)\.", "{m} 既不是文件夹，也不是 ModelScope 模型 ID（所有者/名称）。"),
    (r"Log in with HTTP Basic \(the --auth user:password\)\.", "请用 HTTP Basic 登录（--auth 的 用户名:密码）。"),
    (r"Requests from (?P<o>.+) are not allowed\.", "不允许来自 {o} 的请求。"),
    (r"Host (?P<h>.+) is not one host\[:port\]\.", "Host {h} 不是一个 主机[:端口]。"),
    (r"Host (?P<h>.+) is not served: this app only answers on 127\.0\.0\.1 / localhost\.",
     "不提供 Host {h} 的服务：此应用只响应 127.0.0.1 / localhost。"),
    # Not an error: the status panel's note in demo mode (engine/manager.DEMO_NOTE), read by status_text.
    (r"Demo mode: a tiny model with random weights, so every image is noise\.", "演示模式：使用随机权重的小模型，所以每张图片都是噪点。"),
    (r"A (?P<b>\S+) GiB VRAM budget is below the (?P<m>\S+) GiB this model needs even with every block streamed "
     r"from RAM\.", "{b} GiB 的显存预算低于此模型所需的 {m} GiB（即使所有块都从内存流式加载）。"),
    (r"The ControlNet does not fit in the (?P<b>\S+) GiB VRAM budget beside the model, even with every block "
     r"streamed \(it needs (?P<m>\S+) GiB\)\.",
     "ControlNet 放不进 {b} GiB 的显存预算（即使所有块都流式加载，也需要 {m} GiB）。"),
    (r"This ControlNet \(the union v1\) reads no mask, so it cannot inpaint or outpaint\.",
     "此 ControlNet（union v1）不读取蒙版，因此不能用于局部重绘或扩图。"),
]

HINTS_ZH: list[tuple[str, str]] = [
    (r"Try again, or raise --enhancer-timeout\.", "请重试，或调大 --enhancer-timeout。"),
    (r"Try again in a few seconds\.", "请几秒后重试。"),
    (r"Use or remove the images already uploaded, or try again in (?P<s>\d+) s\.",
     "请先使用或移除已上传的图片，或在 {s} 秒后重试。"),
    (r"List the queue again \(GET /queue\)\.", "请重新列出队列（GET /queue）。"),
    (r"Wait for it, or delete it to drop it\.", "请等待它完成，或删除它。"),
    (r"Delete it and submit the request again\.", "请删除它并重新提交请求。"),
    (r"Press Preload to continue it where it stopped\.", "点击“预加载”从中断处继续。"),
    (r"Pick the model again and confirm that one\.", "请重新选择模型并确认该模型。"),
    (r"Use the name the LoRA list shows \(its path inside the LoRA folder, without \.safetensors\)\.",
     "请使用 LoRA 列表显示的名称（LoRA 文件夹内的路径，不含 .safetensors）。"),
    (r"Put the \.safetensors file in the LoRA folder, or pick one from the LoRA list\.",
     "请把 .safetensors 文件放进 LoRA 文件夹，或从 LoRA 列表中选择。"),
    (r"Write the name with its folder, as the LoRA list shows it\.", "请按 LoRA 列表的显示写出带文件夹的名称。"),
    (r"The file is damaged or not a safetensors file; download it again\.", "文件已损坏或不是 safetensors 文件，请重新下载。"),
    (r"The file is damaged; download it again\.", "文件已损坏，请重新下载。"),
    (r"It is probably a LoRA for another model\.", "它可能是其他模型的 LoRA。"),
    (r"It is a LoRA for another model; pick one made for Z-Image-Turbo\.", "这是其他模型的 LoRA，请选择为 Z-Image-Turbo 制作的 LoRA。"),
    (r"Shorten the prompt\.", "请缩短提示词。"),
    (r"Upload a PNG, JPEG or WebP image saved by an image generator\.", "请上传由图像生成器保存的 PNG、JPEG 或 WebP 图片。"),
    (r"Upload a smaller (?:file|image)\.", "请上传更小的图片。"),
    (r"Upload a PNG, JPEG or WebP image between (?P<lo>\d+) and (?P<hi>\d+) pixels a side\.",
     "请上传每边 {lo} 到 {hi} 像素之间的 PNG、JPEG 或 WebP 图片。"),
    (r"Send the body as JSON with -H 'Content-Type: application/json'\.",
     "请以 JSON 发送请求体：-H 'Content-Type: application/json'。"),
    (r"The endpoints are listed at /gradio_api/info\.", "端点列表见 /gradio_api/info。"),
    (r"Join the queue first\.", "请先加入队列。"),
    (r"POST to /call/<name> first\.", "请先 POST 到 /call/<name>。"),
    (r"Log in on the page first\.", "请先在页面上登录。"),
    (r"Event inputs are small; shorten the text\.", "事件输入应当很短，请缩短文本。"),
    (r"Only the images this server generated are served\.", "只提供本服务器生成的图片。"),
    (r"Try again; if it fails again, the server log has the details \(try Unload, then Preload\)\.",
     "请重试；如果仍然失败，详情见服务器日志（可先卸载，再预加载）。"),
    (r"Check the model id\.", "请检查模型 ID。"),
    (r"Use the \.safetensors or \.gguf version of the model\.", "请使用该模型的 .safetensors 或 .gguf 版本。"),
    (r"Put it in (?P<w>\S+) beside the model, name it with (?P<flag>\S+) FILE, or add its app's folder with --models-from\.",
     "请把它放进模型旁边的 {w}，或用 {flag} 文件 指定，或用 --models-from 添加其所属应用的文件夹。"),
    (r"Connect once to the internet \(a few MB are downloaded\), or add a folder holding the diffusers model with --models-from\.",
     "请联网一次（只下载几 MB），或用 --models-from 添加存有 diffusers 模型的文件夹。"),
    (r"Re-download the model\.", "请重新下载模型。"),
    (r"The files may be incomplete or corrupt: download the model again\.", "文件可能不完整或已损坏：请重新下载模型。"),
    (r"Check the disk, then press Preload\.", "请检查磁盘，然后点击“预加载”。"),
    (r"Use fewer LoRAs, or free some RAM\.", "请减少 LoRA 数量，或释放一些内存。"),
    (r"Set --vram-budget to at least (?P<m>\S+) \(GB\), or use --quantize int8\.",
     "请把 --vram-budget 设为至少 {m}（GB），或使用 --quantize int8。"),
    (r"Use --controlnet (?P<m>\S+) for ControlNet with inpaint and outpaint, or untick Use ControlNet\.",
     "要在局部重绘和扩图中使用 ControlNet，请使用 --controlnet {m}，或取消勾选“启用 ControlNet”。"),
]

# An image refused (store/pnginfo, store/images): "<subject> <what>." The subject is the page's
# name for the image (web/gradio_uploads.UPLOAD_SUBJECTS) or "The uploaded image (<field>)".
IMAGE_SUBJECTS_ZH = {"The uploaded image": "上传的图片", "The Edit image": "“编辑”标签页中的图片",
                     "The PNG info image": "“PNG 信息”中的图片", "The ControlNet image": "ControlNet 图片"}
IMAGE_ZH: list[tuple[str, str]] = [
    (r"is not a PNG, JPEG or WebP image \(its first bytes say (?P<k>.*)\)", "不是 PNG、JPEG 或 WebP 图片（开头的字节是 {k}）"),
    (r"is empty \(0 bytes\)", "是空的（0 字节）"),
    (r"is (?P<n>[\d,]+) bytes; uploads may be at most (?P<cap>[\d,]+) bytes", "有 {n} 字节；上传最多 {cap} 字节"),
    (r"is larger than (?P<mb>\S+) MB", "超过 {mb} MB"),
    (r"is (?P<w>\d+)x(?P<h>\d+) pixels \((?P<n>[\d,]+)\); uploads may have at most (?P<cap>[\d,]+) pixels",
     "是 {w}x{h} 像素（{n}）；上传最多 {cap} 像素"),
    (r"has far more pixels than the (?P<cap>[\d,]+) an upload may have", "像素远多于上传允许的 {cap}"),
    (r"is animated \((?P<n>\d+) frames\); upload a still image", "是动图（{n} 帧）；请上传静态图片"),
    (r"could not be read: image file is truncated.*", "无法读取：图片文件不完整"),
    (r"could not be read: the browser could not decode it", "无法读取：浏览器无法解码它"),
    (r"could not be read: (?P<why>.+)", "无法读取：{why}"),
    (r"is (?P<w>\d+)x(?P<h>\d+) pixels; an image to edit must be at least (?P<lo>\d+)x\d+",
     "是 {w}x{h} 像素；要编辑的图片至少为 {lo}x{lo}"),
    (r"is (?P<w>\d+)x(?P<h>\d+) pixels; an image to edit may be at most (?P<hi>\d+)x\d+",
     "是 {w}x{h} 像素；要编辑的图片最大为 {hi}x{hi}"),
]
_IMAGE_SENTENCE = re.compile(r"(?P<s>The uploaded image|The Edit image|The PNG info image|The ControlNet image)"
                             r"(?: \((?P<f>[^)]*)\))? (?P<what>.+)\.", re.DOTALL)

_INVALID = [(re.compile(p, re.DOTALL), t) for p, t in INVALID_ZH + INVALID_MORE]
_IMAGE = [(re.compile(p, re.DOTALL), t) for p, t in IMAGE_ZH]
_MESSAGES = [(re.compile(p, re.DOTALL), t) for p, t in MESSAGES_ZH + MESSAGES_MORE]
_HINTS = [(re.compile(p, re.DOTALL), t) for p, t in HINTS_ZH + HINTS_MORE]


def _match(table, text: str) -> str | None:
    for pattern, template in table:
        m = pattern.fullmatch(text)
        if m is not None:
            return template.format(**{k: v or "" for k, v in m.groupdict().items()})
    return None


def _detail_zh(detail: str) -> str | None:
    """InvalidRequest's detail in Chinese, one that carries another refusal inside it included."""
    return _match(_INVALID, detail) or nested_zh(detail, _detail_zh)


def message_zh(code: str, message: str, field: str | None = None) -> str:
    """The Chinese text of an error message: a catalog pattern filled with the message's own parts,
    else the code's sentence followed by the English message."""
    if not message:
        return ERROR_ZH.get(code, ERROR_ZH["internal_error"])
    if field is not None and message.startswith(f"{field}: "):
        detail = _detail_zh(message[len(field) + 2:])
        if detail is not None:
            return f"{field}: {detail}"
    found = _match(_MESSAGES, message) or _image_zh(message)
    if found is not None:
        return found
    return f"{ERROR_ZH.get(code, ERROR_ZH['internal_error'])}（{message}）"


def _image_zh(message: str) -> str | None:
    m = _IMAGE_SENTENCE.fullmatch(message)
    what = _match(_IMAGE, m["what"]) if m else None
    if what is None:
        return None
    return IMAGE_SUBJECTS_ZH[m["s"]] + (f"（{m['f']}）" if m["f"] else "") + what + "。"


def hint_zh(hint: str) -> str:
    """A hint in Chinese: a catalog pattern, else the English hint as it is (a hint is an action,
    often a command line, and a generic sentence in its place would say nothing)."""
    if not hint:
        return ""
    found = _match(_HINTS, hint)
    return found if found is not None else hint


def error_text(code: str, message: str, hint: str, lang: str, field: str | None = None) -> tuple[str, str]:
    """(message, hint) of an error in `lang` (a value language_of returns)."""
    if lang != "zh":
        return message, hint
    return message_zh(code, message, field), hint_zh(hint)


def status_text(message: str, hint: str, lang: str) -> tuple[str, str]:
    """(message, hint) of an error the status panel shows, which keeps no code: the catalog's
    Chinese where a pattern knows the message, else the English as it is (a generic sentence in
    front of an unknown message would name the wrong error)."""
    if lang != "zh":
        return message, hint
    return (_match(_MESSAGES, message) or message) if message else "", hint_zh(hint)
