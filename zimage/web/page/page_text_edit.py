"""The Edit tab's own words (its Stop, its send-back buttons, its messages), in English and
Simplified Chinese; page_text merges them into its two tables, so `label()` and `text()` find them
and tests/test_page_text.py checks them with the rest."""
from __future__ import annotations

EDIT_EN: dict[str, str] = {
    "edit_send_again": "Edit again",
    "edit_send_generate": "Send to Generate",
    "edit_send_pnginfo": "Send to PNG info",
    "edit_no_settings": "This image carries no settings: only the picture was sent.",
}
EDIT_ZH: dict[str, str] = {
    "edit_send_again": "再次编辑",
    "edit_send_generate": "发送到生成",
    "edit_send_pnginfo": "发送到 PNG 信息",
    "edit_no_settings": "这张图片没有记录设置：只发送了图片。",
}
