"""The Queue panel's handlers (web/page/ui_queue.py) on a real kept backend, in both languages."""
from zimage.app import create_backend
from zimage.kept_queue import with_kept_queue
from zimage.request import GenerationRequest
from zimage.web.page.ui_queue import drop_picked, listing, run_picked


def test_the_panel_lists_and_answers_in_english_and_chinese(settings):
    manager = with_kept_queue(create_backend(settings)).start()
    try:
        a = manager.kept.add(GenerationRequest(prompt="a <b>bold</b> fox\\nline two", width=512, height=768))
        b = manager.kept.add(GenerationRequest(prompt="an owl"), user="alice")
        rows = listing(manager, None, "en")
        assert [i for i, _ in rows] == [a, b]
        assert f"**#{a}** · waiting · 512x768" in rows[0][1] and "&lt;b&gt;" in rows[0][1]
        assert "等待中" in listing(manager, None, "zh")[0][1]
        assert [i for i, _ in listing(manager, "alice", "en")] == [b]          # a login sees its own
        assert drop_picked(manager, b, "bob", "zh") == f"队列中没有任务 {b}。 请重新列出队列（GET /queue）。"
        assert drop_picked(manager, b, "alice", "zh") == f"任务 #{b} 已删除。"
        assert run_picked(manager, b, None, "en").startswith(f"No kept job {b}")
        assert [i for i, _ in listing(manager, None, "en")] == [a]
    finally:
        manager.close()
