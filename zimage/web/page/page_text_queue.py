"""The Queue panel's words (web/page/ui_queue.py) in the page's two languages; page_text merges them
into its tables, so `label()` and `text()` know them."""
from __future__ import annotations

QUEUE_EN: dict[str, str] = {
    "queue_label": "Queue (kept over restarts)",
    "queue_refresh": "Refresh",
    "queue_run": "Run",
    "queue_delete": "Delete",
    "queue_empty": "No kept jobs: every generation asked for has been made.",
    "queue_intro": "Generations waiting, running or interrupted, kept on disk when the app stops. "
                   "**Run** submits one again, **Delete** drops it.",
    "queue_row": "**#{id}** · {state} · {size} · {created} · {prompt}",
    "queue_state_waiting": "waiting",
    "queue_state_running": "running",
    "queue_state_interrupted": "interrupted (the app stopped while it ran)",
    "queue_live": " · in this run's queue",
    "queue_ran": "Job #{id} submitted: its images appear in the History tab when saved.",
    "queue_deleted": "Job #{id} deleted.",
    "queue_more": "{n} more not shown: run or delete these first (GET /queue lists them all).",
}

QUEUE_ZH: dict[str, str] = {
    "queue_label": "队列（重启后保留）",
    "queue_refresh": "刷新",
    "queue_run": "运行",
    "queue_delete": "删除",
    "queue_empty": "没有保留的任务：所有请求的生成都已完成。",
    "queue_intro": "等待中、运行中或被中断的生成任务，应用停止时保存在磁盘上。**运行** 重新提交，**删除** 将其移除。",
    "queue_row": "**#{id}** · {state} · 尺寸 {size} · 提交于 {created} · {prompt}",
    "queue_state_waiting": "等待中",
    "queue_state_running": "运行中",
    "queue_state_interrupted": "已中断（运行时应用停止了）",
    "queue_live": " · 在本次运行的队列中",
    "queue_ran": "任务 #{id} 已提交：图片保存后会出现在“历史”标签页中。",
    "queue_deleted": "任务 #{id} 已删除。",
    "queue_more": "还有 {n} 个未显示：请先运行或删除这些（GET /queue 会列出全部）。",
}
