"""PNG info's parameters parser on long lines: A1111's own pattern (the baseline, which the app used
until its key was bounded) beside the app's parse_infotext, side by side in one run. CPU only.

    python -m bench.infotext_bench [--max-baseline-chars N]
One JSON line per length: seconds for A1111's pattern (skipped past N characters, 8,000 by default:
it grows with the square of the length) and for the app, on a line of one repeated letter (no
colon: every position is tried as the start of a key).
"""
from __future__ import annotations

import argparse
import json
import re
import time

# modules/infotext_utils.py, re_param, as A1111 has it
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
LENGTHS = (2_000, 8_000, 64 * 1024, 900_000)


def seconds(fn, text: str) -> float:
    started = time.perf_counter()
    fn(text)
    return round(time.perf_counter() - started, 4)


def main() -> None:
    from zimage.infotext import parse_infotext

    p = argparse.ArgumentParser()
    p.add_argument("--max-baseline-chars", type=int, default=8_000)
    a = p.parse_args()
    for n in LENGTHS:
        line = "x" * n
        fig = {"chars": n, "ours_s": seconds(parse_infotext, line)}
        if n <= a.max_baseline_chars:
            fig["a1111_pattern_s"] = seconds(A1111_PARAM.findall, line)
            fig["ratio"] = round(fig["a1111_pattern_s"] / max(fig["ours_s"], 1e-6), 1)
        print(json.dumps(fig), flush=True)


if __name__ == "__main__":
    main()
