#!/usr/bin/env bash
# The one script to run on a lent GPU machine (repo root, $OUT set, no network), sized for the
# 15-minute device budget: all stages in ONE call of at most 8 minutes (timeout_s 480).
#
#   scripts/gpu-check.sh [stage ...]    stages, in order (default: all):
#
#   stage     limit  what
#   build     150 s  nvidia-smi, toolchain versions; cmake-js build with AV_CUDA=ON for this GPU's
#                    architecture only (sm_90 on H100/H200), all cores, into build/gpu
#   parity     60 s  vitest test/parity -t cuda: every op's CUDA cases against the CPU reference
#   golden     45 s  bench/cuda-golden.ts: the trained default model end to end, CUDA vs CPU,
#                    greedy: tokens agree >= 99.9% and the image >= 45 dB PSNR (f32 and bf16 KV)
#   memcheck   45 s  compute-sanitizer memcheck on bench/cuda-sanitize.ts (smallest shapes)
#   racecheck  30 s  racecheck on the attention and reduction kernels only (AV_SMOKE_ONLY)
#   e2e        75 s  a random-weight d24 file (training/avtrain/random_model.py, bf16), then
#                    `alignvar bench` on it: per-scale latency at tile batch 1 and 8, prepare,
#                    decode, e2e ms per 512^2 image at batch 1 and images/s at the best batch
#   ops        60 s  bench/cuda.bench.ts on the d24 shapes that the targets name: GEMM vs
#                    torch.matmul, attention at the last scale vs dense bf16 peak, VQ lookup and
#                    upsample_accum vs the measured copy bandwidth
#                    ----
#                    465 s in all, under the call's 480 s; a stage that hits its limit is killed,
#                    reported (rc 124) and the next one runs.
#
# Files back under $OUT (8 at most): setup.log parity.log golden.json sanitize.log bench.log
# e2e.json cuda-<gpu>.json summary.txt. The summary table is printed last.
#
# Dry run on a machine without a GPU (CUDA off: CPU stands in for every backend, a small preset
# (tiny) for d24, the sanitizer stages run the smoke harness without compute-sanitizer):  GPU_CHECK_DRYRUN=1 scripts/gpu-check.sh
#
# Node.js and node_modules: the GPU image has neither. On the development machine run
#   scripts/gpu-check.sh --prepare
# which writes .gpu-carry/ (node binary + the node_modules the checks need, xz-compressed,
# about 45 MB) and pass `carry: [".gpu-carry"]` to the device call (add /.gpu-carry/ to
# .gitignore or .git/info/exclude so it is never committed). This script unpacks it with
# python3 (always on the image) when `node` is missing.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARRY="$ROOT/.gpu-carry"

if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p "$CARRY"
  echo "packing $(command -v node) ($(node --version))"
  tar -C "$(dirname "$(readlink -f "$(command -v node)")")" -cf - "$(basename "$(readlink -f "$(command -v node)")")" |
    xz -T0 -6 >"$CARRY/node.tar.xz"
  # Everything but linters, formatters, the TypeScript compiler and image codecs (the checks run
  # .ts through tsx/vitest, which transpile with esbuild/rolldown and never type-check).
  tar -cf - --exclude='node_modules/typescript' --exclude='node_modules/prettier' \
    --exclude='node_modules/eslint*' --exclude='node_modules/@eslint*' --exclude='node_modules/@typescript-eslint' \
    --exclude='node_modules/@img' --exclude='node_modules/sharp' --exclude='node_modules/.cache' node_modules |
    xz -T0 -6 >"$CARRY/node_modules.tar.xz"
  du -sh "$CARRY"/*
  echo "carry .gpu-carry with the device call; make sure /.gpu-carry/ is ignored by git"
  exit 0
fi

OUT="${OUT:-$ROOT/gpu-check-out}"
mkdir -p "$OUT"
STAGES=("$@")
[[ ${#STAGES[@]} -eq 0 ]] && STAGES=(build parity golden memcheck racecheck e2e ops)
DRY="${GPU_CHECK_DRYRUN:-0}"
want() { local s; for s in "${STAGES[@]}"; do [[ "$s" == "$1" ]] && return 0; done; return 1; }

SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# ---- node ---------------------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1; then
  if [[ -f "$CARRY/node.tar.xz" ]]; then
    mkdir -p /tmp/gpu-node/bin
    python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$CARRY/node.tar.xz" /tmp/gpu-node/bin
    export PATH="/tmp/gpu-node/bin:$PATH"
  fi
fi
if [[ ! -d node_modules && -f "$CARRY/node_modules.tar.xz" ]]; then
  python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$CARRY/node_modules.tar.xz" "$ROOT"
fi
if ! command -v node >/dev/null 2>&1 || [[ ! -d node_modules ]]; then
  note "FATAL: node or node_modules missing; run 'scripts/gpu-check.sh --prepare' on the dev machine and carry .gpu-carry"
  exit 2
fi

BUILD="${GPU_CHECK_BUILD:-$ROOT/build/gpu}"  # GPU_CHECK_BUILD: another build folder (dry runs)
ADDON="$BUILD/Release/alignvar.node"
export ALIGNVAR_ADDON="$ADDON"
TSX=(node --import tsx)

run_stage() { # name limit_s log cmd...
  local name="$1" limit="$2" log="$3"
  shift 3
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  note "$(printf '%-10s rc=%-3s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$(basename "$log")")"
  return $rc
}

# ---- build --------------------------------------------------------------------------------------
if want build; then
  {
    echo "== nvidia-smi"
    nvidia-smi || true
    echo "== toolchain"
    nvcc --version | tail -2
    cmake --version | head -1
    node --version
    command -v compute-sanitizer || echo "compute-sanitizer: not found"
    python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' 2>&1 | tail -1
  } >"$OUT/setup.log" 2>&1
  CC_ARCH="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
  [[ -z "$CC_ARCH" ]] && CC_ARCH=90
  CUDA_FLAG=ON
  [[ "$DRY" == "1" ]] && CUDA_FLAG=OFF
  note "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1) (sm_$CC_ARCH, AV_CUDA=$CUDA_FLAG)"
  run_stage build 150 "$OUT/build.tmp" node node_modules/cmake-js/bin/cmake-js build -O "$BUILD" "--CDAV_CUDA=$CUDA_FLAG" \
    "--CDAV_CUDA_ARCHS=$CC_ARCH" --CDCMAKE_BUILD_TYPE=Release -p "$(nproc)"
  cat "$OUT/build.tmp" >>"$OUT/setup.log"
  rm -f "$OUT/build.tmp"
  grep -iE "warning|error" "$OUT/setup.log" | head -20 | tee -a "$SUMMARY"
  node -e "const b=require(process.env.ALIGNVAR_ADDON).backendInfo().find(x=>x.name==='cuda');console.log('cuda backend:', JSON.stringify(b))" 2>&1 |
    tee -a "$OUT/setup.log" | tee -a "$SUMMARY"
fi
if [[ ! -f "$ADDON" ]]; then
  note "FATAL: no addon at $ADDON (run the build stage first)"
  exit 2
fi
# In a dry run the CPU stands in for the CUDA backend in every harness.
if [[ "$DRY" == "1" ]]; then
  export AV_BENCH_BACKEND=cpu AV_SMOKE_BACKEND=cpu
  PRESET="${GPU_CHECK_PRESET:-tiny}"
else
  PRESET="${GPU_CHECK_PRESET:-d24}"
fi

# ---- parity: the CUDA cases only ----------------------------------------------------------------
if want parity; then
  run_stage parity 60 "$OUT/parity.log" node node_modules/vitest/vitest.mjs run test/parity -t cuda --passWithNoTests
  grep -E "Test Files|Tests |FAIL|✗|×" "$OUT/parity.log" | sed 's/\x1b\[[0-9;]*m//g' | head -30 | tee -a "$SUMMARY"
fi

# ---- golden end to end ------------------------------------------------------------------------
if want golden; then
  run_stage golden 45 "$OUT/golden.log" "${TSX[@]}" bench/cuda-golden.ts --json "$OUT/golden.json"
  grep -vE "^npm warn" "$OUT/golden.log" | tee -a "$SUMMARY"
  rm -f "$OUT/golden.log"
fi

# ---- compute-sanitizer -------------------------------------------------------------------------
: >"$OUT/sanitize.log"
if want memcheck || want racecheck; then
  if command -v compute-sanitizer >/dev/null 2>&1 && [[ "$DRY" != "1" ]]; then
    if want memcheck; then
      run_stage memcheck 45 "$OUT/memcheck.tmp" compute-sanitizer --tool memcheck \
        --error-exitcode 3 "${TSX[@]}" bench/cuda-sanitize.ts
      { echo "==== memcheck"; cat "$OUT/memcheck.tmp"; } >>"$OUT/sanitize.log"
      grep -E "ERROR SUMMARY|passed" "$OUT/memcheck.tmp" | tee -a "$SUMMARY"
    fi
    if want racecheck; then
      AV_SMOKE_ONLY='^(attn|qkv_prep|layernorm|groupnorm|softmax|sample|vq_nearest)$' \
        run_stage racecheck 30 "$OUT/racecheck.tmp" compute-sanitizer --tool racecheck --racecheck-report all \
        --error-exitcode 3 "${TSX[@]}" bench/cuda-sanitize.ts
      { echo "==== racecheck (attention and reductions)"; cat "$OUT/racecheck.tmp"; } >>"$OUT/sanitize.log"
      grep -E "RACECHECK SUMMARY|ERROR SUMMARY|passed" "$OUT/racecheck.tmp" | tee -a "$SUMMARY"
    fi
    rm -f "$OUT/memcheck.tmp" "$OUT/racecheck.tmp"
  else
    # No sanitizer (or a dry run): run the smoke harness itself so the stage is still exercised.
    run_stage smoke 45 "$OUT/sanitize.log" "${TSX[@]}" bench/cuda-sanitize.ts
    grep -E "FAIL|passed" "$OUT/sanitize.log" | tee -a "$SUMMARY"
    [[ "$DRY" != "1" ]] && note "sanitize: compute-sanitizer not found"
  fi
fi

# ---- d24 end to end through `alignvar bench` -------------------------------------------------
: >"$OUT/bench.log"
if want e2e; then
  MODEL="/tmp/gpu-check-$PRESET.safetensors"
  E2E_DEVICE=cuda E2E_WARMUP=1 E2E_RUNS=3
  [[ "$DRY" == "1" ]] && E2E_DEVICE=cpu E2E_WARMUP=0 E2E_RUNS=1
  # One bash -c (timeout cannot run a shell function): make the file once, then time it twice
  # (--json for the record, then the tables for the log).
  # The interpreter with PyTorch: python3 on the GPU image; Debian's /usr/bin/python3 on the dev machine.
  export PYTHON="${PYTHON:-python3}"
  [[ "$DRY" == "1" && -x /usr/bin/python3 ]] && export PYTHON="${GPU_CHECK_PYTHON:-/usr/bin/python3}"
  E2E_CMD='[[ -f "$1" ]] || (cd training && "$PYTHON" -m avtrain.random_model --preset "$2" --dtype bf16 --out "$1") || exit 1
    node --import tsx src/cli/main.ts bench --model "$1" --device "$3" --tile-batch 1,8 --warmup "$5" --runs "$6" --json >"$4" &&
    node --import tsx src/cli/main.ts bench --model "$1" --device "$3" --tile-batch 1,8 --warmup 0 --runs 1'
  run_stage e2e 75 "$OUT/e2e.tmp" bash -c "$E2E_CMD" e2e "$MODEL" "$PRESET" "$E2E_DEVICE" "$OUT/e2e.json" "$E2E_WARMUP" "$E2E_RUNS"
  { echo "==== e2e ($PRESET)"; cat "$OUT/e2e.tmp"; } >>"$OUT/bench.log"
  tail -25 "$OUT/e2e.tmp" | tee -a "$SUMMARY"
  rm -f "$OUT/e2e.tmp"
fi

# ---- per-op figures at the target shapes --------------------------------------------------------
if want ops; then
  OPS_FILTER='^(linear .* si9 |attn si9 |memory )'
  [[ "$DRY" == "1" ]] && OPS_FILTER='^memory vq_lookup' # the CPU stand-in is far too slow for d24 GEMMs
  run_stage ops 60 "$OUT/ops.tmp" "${TSX[@]}" bench/cuda.bench.ts --time 0.1 --filter "$OPS_FILTER"
  { echo "==== ops"; cat "$OUT/ops.tmp"; } >>"$OUT/bench.log"
  grep -vE "^npm warn" "$OUT/ops.tmp" | tail -30 | tee -a "$SUMMARY"
  rm -f "$OUT/ops.tmp"
  cp bench/results/cuda-*.json "$OUT/" 2>/dev/null
fi

echo "==== summary"
cat "$SUMMARY"
