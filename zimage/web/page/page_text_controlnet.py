"""The ControlNet accordion's words (web/page/ui_controlnet.py) in English and Simplified Chinese;
page_text puts them into its two tables."""
from __future__ import annotations

CONTROLNET_EN: dict[str, str] = {
    "controlnet_panel": "ControlNet",
    "controlnet_enable": "Use ControlNet",
    "controlnet_type": "Control type",
    "controlnet_canny": "Canny edges (computed from the image)",
    "controlnet_none": "None: the image is the map (depth, pose, lines...)",
    "controlnet_image": "Control image (PNG, JPEG or WebP)",
    "controlnet_preview": "What the ControlNet sees",
    "controlnet_weight": "Control strength",
    "controlnet_start": "Guidance start (fraction of the steps)",
    "controlnet_end": "Guidance end",
    "controlnet_remove": "Remove control image",
    "controlnet_loaded": "Control image: {name} ({w}x{h})",
}
CONTROLNET_ZH: dict[str, str] = {
    "controlnet_panel": "ControlNet",
    "controlnet_enable": "启用 ControlNet",
    "controlnet_type": "控制类型",
    "controlnet_canny": "Canny 边缘（由图片计算）",
    "controlnet_none": "无：图片本身就是控制图（深度、姿势、线稿……）",
    "controlnet_image": "控制图片（PNG、JPEG 或 WebP）",
    "controlnet_preview": "ControlNet 看到的图",
    "controlnet_weight": "控制强度",
    "controlnet_start": "引导开始（占总步数的比例）",
    "controlnet_end": "引导结束",
    "controlnet_remove": "移除控制图片",
    "controlnet_loaded": "控制图片：{name}（{w}x{h}）",
}
