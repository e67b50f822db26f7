"""The page's words for issue 33 (X/Y/Z plot, batch count, Generate forever, seed tools), in
English and Simplified Chinese; merged into page_text's tables through page_text_more. Stdlib only."""
from __future__ import annotations

EXPLORE_EN: dict[str, str] = {
    "seed_none_yet": "No result yet whose seed could be reused.",
    "batch_count_label": "Batch count",
    "forever_label": "Generate forever (until Stop)",
    "batch_progress": "Batch {i} of {n} · {desc}",
    "batch_forever_progress": "Batch {i} (until Stop) · {desc}",
    "batches_stopped": "Stopped after {k} batches; their images are kept.",
    "tab_xyz": "X/Y/Z plot",
    "xyz_intro": "A grid over one to three settings, from the Generate tab's prompt and settings. Values as A1111 "
                 "writes them: 1-5, 1-10 (+2), 0-1 [3], a, b, c (Prompt S/R: the first value is the text replaced).",
    "xyz_none": "Nothing",
    "xyz_seed": "Seed", "xyz_steps": "Steps", "xyz_guidance": "CFG scale", "xyz_size": "Size",
    "xyz_lora_strength": "LoRA strength", "xyz_prompt_sr": "Prompt S/R",
    "xyz_x_type": "X type", "xyz_y_type": "Y type", "xyz_z_type": "Z type",
    "xyz_x_values": "X values", "xyz_y_values": "Y values", "xyz_z_values": "Z values",
    "xyz_run": "Make grid",
    "xyz_stop": "Stop",
    "xyz_grid_label": "Grid",
    "xyz_progress": "Cell {i} of {n} · {desc}",
    "xyz_done": "{k} of {n} cells made in {s} s; each is saved with its own parameters, the grid too: {file}",
    "xyz_stopped": "Stopped: {k} of {n} cells made; they and their partial grid are saved.",
}
EXPLORE_ZH: dict[str, str] = {
    "seed_none_yet": "还没有可以重用种子的结果。",
    "batch_count_label": "生成批次",
    "forever_label": "无限生成（直到点击停止）",
    "batch_progress": "第 {i} 批，共 {n} 批 · {desc}",
    "batch_forever_progress": "第 {i} 批（直到停止）· {desc}",
    "batches_stopped": "已在 {k} 批后停止；这些批次的图片已保留。",
    "tab_xyz": "X/Y/Z 图表",
    "xyz_intro": "在一到三个设置上生成对比网格，使用“生成”标签页的提示词和设置。值的写法与 A1111 相同："
                 "1-5、1-10 (+2)、0-1 [3]、a, b, c（提示词搜索/替换：第一个值是被替换的文字）。",
    "xyz_none": "无",
    "xyz_seed": "种子", "xyz_steps": "步数", "xyz_guidance": "CFG 引导系数", "xyz_size": "尺寸",
    "xyz_lora_strength": "LoRA 强度", "xyz_prompt_sr": "提示词搜索/替换",
    "xyz_x_type": "X 轴类型", "xyz_y_type": "Y 轴类型", "xyz_z_type": "Z 轴类型",
    "xyz_x_values": "X 轴的值", "xyz_y_values": "Y 轴的值", "xyz_z_values": "Z 轴的值",
    "xyz_run": "生成网格",
    "xyz_stop": "停止",
    "xyz_grid_label": "网格",
    "xyz_progress": "第 {i} 格，共 {n} 格 · {desc}",
    "xyz_done": "已在 {s} 秒内生成 {n} 格中的 {k} 格；每格都按自己的参数保存，网格图也已保存：{file}",
    "xyz_stopped": "已停止：已生成 {n} 格中的 {k} 格；这些格子和不完整的网格图已保存。",
}
