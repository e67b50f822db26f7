"""The PNG info tab's words (web/page/ui_pnginfo.py) in English and Simplified Chinese; page_text puts
them into its two tables."""
from __future__ import annotations

PNGINFO_EN: dict[str, str] = {
    "png_upload": "Image (PNG, JPEG or WebP)",
    "png_send": "Send to Generate",
    "png_nothing_found": "This image carries no generation parameters (no `parameters` text, ComfyUI graph or "
                         "EXIF comment).",
    "png_sent": "Sent to the Generate tab.",
    "png_nothing_to_send": "Drop an image with parameters first.",
    "png_source_parameters": "PNG parameters text",
    "png_source_comfyui": "ComfyUI graph",
    "png_source_exif": "EXIF UserComment",
    "png_raw": "Raw text",
    "png_table_head": "| Field | Value |",
    "field_cfg": "Guidance (CFG)",
    "field_sampler": "Sampler",
    "field_read_from": "Read from",
    "field_image": "Image",
}
PNGINFO_ZH: dict[str, str] = {
    "png_upload": "图片（PNG、JPEG 或 WebP）",
    "png_send": "发送到“生成”",
    "png_nothing_found": "这张图片不含生成参数（没有 `parameters` 文本、ComfyUI 图或 EXIF 注释）。",
    "png_sent": "已发送到“生成”标签页。",
    "png_nothing_to_send": "请先放入一张带参数的图片。",
    "png_source_parameters": "PNG parameters 文本",
    "png_source_comfyui": "ComfyUI 图",
    "png_source_exif": "EXIF UserComment",
    "png_raw": "原始文本",
    "png_table_head": "| 字段 | 值 |",
    "field_cfg": "引导系数（CFG）",
    "field_sampler": "采样器",
    "field_read_from": "读取自",
    "field_image": "图片",
}
