#!/usr/bin/env bash
# Wheels for the Ray GPU benchmark on the device machines (Python 3.12, no network, no Ray there).
# One device call carries at most 64 MiB, and Ray Serve's missing wheels are ~105 MB (ray alone
# 79 MB), so this downloads only what the GPU image lacks and splits it in two folders of < 60 MB:
#   .whl-ray/a  (first call: copy it to /tmp/rw there)
#   .whl-ray/b  (second call, same warm machine: join the ray parts, install, run the bench)
# See docs/BENCHMARKS.md, "Many GPUs", for the two commands.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SPEC="$(grep -v '^#' requirements-ray.txt | head -1)"
ALL="$(mktemp -d)"
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$ALL" "$SPEC"
rm -rf .whl-ray && mkdir -p .whl-ray/a .whl-ray/b
grep -qx '/.whl-ray/' .git/info/exclude || echo '/.whl-ray/' >> .git/info/exclude
python3 - "$ALL" bench/gpu_image_packages.txt <<'PY'
import os, re, shutil, sys
src, listing = sys.argv[1], sys.argv[2]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
present = {norm(w) for line in open(listing) if not line.startswith("#") for w in line.split()}
ray = None
size_b = 0
for f in sorted(os.listdir(src)):
    if norm(f.split("-")[0]) in present:
        continue
    if f.startswith("ray-"):
        ray = f
        continue
    shutil.copy(os.path.join(src, f), ".whl-ray/b")
    size_b += os.path.getsize(os.path.join(src, f))
data = open(os.path.join(src, ray), "rb").read()
cut = 50 * 2**20
open(".whl-ray/a/" + ray + ".part1", "wb").write(data[:cut])
open(".whl-ray/b/" + ray + ".part2", "wb").write(data[cut:])
print(f"a: {cut / 2**20:.0f} MiB, b: {(len(data) - cut + size_b) / 2**20:.0f} MiB ({ray} split in two)")
PY
rm -rf "$ALL"
