#!/usr/bin/env bash
# Which torch build fits this machine; sourced by setup_env.sh (and its test).
#   zimage_torch_kind: cuda where an NVIDIA driver answers (nvidia-smi -L), else cpu; ZIMAGE_TORCH forces it.
#   zimage_torch_args: pip's arguments for that build, one a line. TORCH_SPEC (and TORCH_INDEX) override.
# A plain "torch" from PyPI is a multi-GB CUDA build on Linux (18 nvidia packages, triton), useless
# without a GPU: the CPU build comes from PyTorch's CPU index.
ZIMAGE_CPU_TORCH="torch==2.13.0"
ZIMAGE_CPU_INDEX="${ZIMAGE_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

zimage_torch_kind() {
  if [ -n "${ZIMAGE_TORCH:-}" ]; then echo "$ZIMAGE_TORCH"; return; fi
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo cuda; else echo cpu; fi
}

zimage_torch_args() {
  if [ -n "${TORCH_SPEC:-}" ]; then
    echo "$TORCH_SPEC"
    if [ -n "${TORCH_INDEX:-}" ]; then printf '%s\n' --extra-index-url "$TORCH_INDEX"; fi
  elif [ "$(zimage_torch_kind)" = cuda ]; then
    echo "torch>=2.6"
  elif "${PYTHON:-python3}" -c "import urllib.request as u; u.urlopen('$ZIMAGE_CPU_INDEX/torch/', timeout=10)" 2>/dev/null; then
    # The CPU index's "+cpu" build sorts above PyPI's plain one of the same version, so pip takes it.
    printf '%s\n' "$ZIMAGE_CPU_TORCH" --extra-index-url "$ZIMAGE_CPU_INDEX"
  else
    # The CPU index is out of reach (a closed network): a CPU wheel pip finds itself (find-links, its
    # cache, a mirror). pip's retries against a dead host cost minutes, so it is not named at all.
    echo "$ZIMAGE_CPU_TORCH"
  fi
}
