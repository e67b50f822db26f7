"""The page's words for Variety and the prompt enhancer (issue 32: ui_variety, ui_enhance), in
English and Simplified Chinese; merged into page_text's tables through page_text_more. Stdlib only."""
from __future__ import annotations

PROMPT_EN: dict[str, str] = {
    "variety_label": "Variety",
    "variety_info": "0 = off. Seeded noise on the prompt for the first steps: seeds differ more, "
                    "text and prompt adherence hold.",
    "xyz_variety": "Variety", "xyz_model": "Model",
    "enhance_btn": "✨ Enhance",
    "enhance_undo": "↶ Undo",
    "enhancer_system_label": "Enhance: instruction (empty: the built-in one)",
    "enhancer_system_info": "What the prompt enhancer is told before your prompt; kept in this browser.",
    "enhance_progress": "Enhancing the prompt · {desc}",
    "enhance_writing": "writing",
    "enhance_done": "Prompt enhanced in {s} s ({tokens} tokens). Edit it, or Undo to get yours back.",
    "enhance_undone": "Your prompt is back.",
    "enhance_empty": "Write a prompt first, then Enhance.",
    "enhance_failed": "The prompt could not be enhanced: {error} Your prompt is unchanged.",
    "enhance_stopped": "Enhance stopped; your prompt is unchanged.",
    "enhance_busy": "Enhance waits for the model: a generation is running (it starts when that ends; Stop cancels it).",
}
PROMPT_ZH: dict[str, str] = {
    "variety_label": "多样性",
    "variety_info": "0 = 关闭。在前几步给提示词加入由种子决定的噪声：不同种子的图片差别更大，文字和提示词的遵循不受影响。",
    "xyz_variety": "多样性", "xyz_model": "模型",
    "enhance_btn": "✨ 优化提示词",
    "enhance_undo": "↶ 撤销",
    "enhancer_system_label": "提示词优化：指令（留空：使用内置指令）",
    "enhancer_system_info": "提示词优化器在读取你的提示词之前收到的指令；保存在此浏览器中。",
    "enhance_progress": "正在优化提示词 · {desc}",
    "enhance_writing": "正在改写",
    "enhance_done": "提示词已在 {s} 秒内优化（{tokens} 个词元）。可以继续编辑，或点“撤销”恢复你的提示词。",
    "enhance_undone": "已恢复你的提示词。",
    "enhance_empty": "请先写提示词，再点“优化提示词”。",
    "enhance_failed": "无法优化提示词：{error} 你的提示词没有改变。",
    "enhance_stopped": "已停止优化；你的提示词没有改变。",
    "enhance_busy": "优化需要等待模型：正在生成图片（生成结束后开始；点“停止”可取消）。",
}
