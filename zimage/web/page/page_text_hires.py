"""The page's words for hires fix and Upscale (issue 32), in English and Simplified Chinese:
merged into page_text's tables. Stdlib only, as page_text is at import."""
from __future__ import annotations

HIRES_EN: dict[str, str] = {
    "hires_panel": "Hires fix",
    "hires_enable": "Upscale each result, then refine it (hires fix)",
    "hires_upscaler": "Upscaler",
    "hires_upscaler_info": "Lanczos, or an ESRGAN-family .safetensors file in the upscaler folder",
    "hires_scale": "Upscale by",
    "hires_steps": "Hires steps (0: the same as Steps)",
    "hires_strength": "Denoising strength (0: upscale only)",
    "hires_refresh": "Refresh upscalers",
    "upscale_btn": "Upscale",
    "upscale_nothing": "Click an image in the results first, then Upscale.",
    "upscale_gone": "That image is no longer on this page; generate or pick it again.",
}
HIRES_ZH: dict[str, str] = {
    "hires_panel": "高清修复",
    "hires_enable": "放大每张结果，然后细化（高清修复）",
    "hires_upscaler": "放大器",
    "hires_upscaler_info": "Lanczos，或放大器文件夹中的 ESRGAN 系列 .safetensors 文件",
    "hires_scale": "放大倍数",
    "hires_steps": "高清修复步数（0：与步数相同）",
    "hires_strength": "重绘幅度（0：只放大）",
    "hires_refresh": "刷新放大器列表",
    "upscale_btn": "放大",
    "upscale_nothing": "请先在结果中点击一张图片，再点放大。",
    "upscale_gone": "该图片已不在此页面上；请重新生成或选择。",
}
