#!/bin/bash
# The GPU runs of issues 35 and 34, one device call per part, each under 10 minutes (the device tool's
# limit per command): docs/BENCHMARKS.md, "The GPU runs of issues 35 and 34: how".
#
#   bash bench/gpu_run.sh 35a|35b|34a|34b|34c
#
# Run from the repository root on the GPU machine, carrying .whl/ (the wheels listed in
# docs/BENCHMARKS.md) and .bench_tools/make_random_zimage.py (a copy of ../shared/anchors/'s). JSON
# lines go to stdout and to $OUT/<part>/ (the device tool's $OUT; /tmp/gpu-out elsewhere). The machine
# stays warm between calls sent at once: the installed wheels, the 20.5 GB checkpoint (/tmp/zfull) and the
# single files (/tmp/zfiles) of one call are used by the next; on a fresh machine they are made again.
# Disk: checkpoint 20.5 GB + 35's single files 28.5 GB; 35b deletes the files (--clean) so that 34b
# has room for the fp32 DiT and its bf16 copy (37 GB, deleted at its end).
# A dry run on the CPU: PYTHON=.venv/bin/python GPU_RUN_SCALE=tiny GPU_RUN_CKPT=/tmp/t GPU_RUN_FILES=/tmp/tf
# GPU_RUN_EXTRA="--size 256 --steps 2" bash bench/gpu_run.sh 35a (EXTRA goes to the gpu35/gpu34 benches).
set -euo pipefail
part=${1:?"part: 35a 35b (issue 35), 34a 34b 34c (issue 34)"}
out=${OUT:-/tmp/gpu-out}/$part
py=${PYTHON:-python3}
site=$HOME/site
ckpt=${GPU_RUN_CKPT:-/tmp/zfull}
files=${GPU_RUN_FILES:-/tmp/zfiles}
read -r -a extra <<< "${GPU_RUN_EXTRA:-}"
limit=${GPU_RUN_LIMIT_S:-545}          # this call's seconds for the bench (the tool allows 600 in all)

if [ -d .whl ] && [ ! -f "$site/.installed" ]; then
    $py -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl
    touch "$site/.installed"
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
[ -f "$ckpt/model_index.json" ] || $py .bench_tools/make_random_zimage.py "$ckpt" --scale "${GPU_RUN_SCALE:-full}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
df -h /tmp | tail -1
budget=$((limit - SECONDS))
echo "part $part: ${SECONDS} s of setup, ${budget} s for the bench" >&2

case $part in
    35a) $py -m bench.gpu35_bench "$ckpt" --out "$out" --files "$files" --budget-s "$budget" \
             --items 1,2,4,6 --formats folder,bf16,fp8 --write bf16,fp8,Q8_0,Q4_K "${extra[@]}" ;;
    35b) $py -m bench.gpu35_bench "$ckpt" --out "$out" --files "$files" --budget-s "$budget" \
             --items 1,3,5,7 --formats Q8_0,Q4_K --clean "${extra[@]}" ;;
    34a) timeout "$budget" $py -m bench.startup_bench "$ckpt" --only webui_off,webui_auto_empty,webui_auto_warm \
             --warm-only --size 1024 --steps 8 --steady 3 | tee "$out/compile.jsonl" \
             || echo '{"error": "startup_bench stopped at the budget"}' ;;
    34b) $py -m bench.gpu34_bench "$ckpt" --out "$out" --files "$files" --budget-s "$budget" "${extra[@]}" ;;
    34c) timeout $((budget / 2)) $py -m bench.startup_bench "$ckpt" --only seed,webui_off --size 1024 --steps 8 \
             | tee "$out/startup.jsonl" || echo '{"error": "startup_bench stopped at its share of the budget"}'
         timeout $((limit - SECONDS - 5)) $py -m bench.process_bench "$ckpt" --size 1024 --steps 8 --repeat 1 \
             | tee "$out/process.jsonl" || echo '{"error": "process_bench stopped at the budget"}' ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
esac
