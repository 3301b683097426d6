#!/usr/bin/env bash
# The one script to run on a lent GPU machine (repo root, $OUT set, no network):
#
#   scripts/gpu-check.sh [stage ...]      stages: build parity smoke sanitize bench (default: all)
#
#   build     nvidia-smi, toolchain versions, cmake-js build with AV_CUDA=ON for this GPU's
#             architecture only, into build/gpu (kept between calls while the machine is warm)
#   parity    vitest test/parity with ALIGNVAR_ADDON=build/gpu: every available backend (so the
#             CUDA one) against the CPU reference
#   smoke     bench/cuda-sanitize.ts: every op and kernel variant once, CUDA vs CPU
#   sanitize  the same script under compute-sanitizer memcheck and racecheck
#   bench     bench/cuda.bench.ts: per-op figures at the d24 shapes vs PyTorch on this machine
#
# Logs go to $OUT (at most 8 files come back: setup.log parity.log smoke.log memcheck.log
# racecheck.log bench.log cuda-<gpu>.json summary.txt); a summary table is printed last.
# Each stage has its own time limit so that all of them fit one 10-minute call on an H100;
# split the stages over several calls if a limit is hit.
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
[[ ${#STAGES[@]} -eq 0 ]] && STAGES=(build parity smoke sanitize bench)
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

BUILD="$ROOT/build/gpu"
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
  note "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1) (sm_$CC_ARCH)"
  run_stage build 420 "$OUT/build.tmp" node node_modules/cmake-js/bin/cmake-js build -O "$BUILD" --CDAV_CUDA=ON \
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

# ---- parity ------------------------------------------------------------------------------------
if want parity; then
  run_stage parity 300 "$OUT/parity.log" node node_modules/vitest/vitest.mjs run test/parity
  grep -E "Test Files|Tests |FAIL|✗|×" "$OUT/parity.log" | sed 's/\x1b\[[0-9;]*m//g' | head -30 | tee -a "$SUMMARY"
fi

# ---- smoke -------------------------------------------------------------------------------------
if want smoke; then
  run_stage smoke 120 "$OUT/smoke.log" "${TSX[@]}" bench/cuda-sanitize.ts
  grep -E "FAIL|passed" "$OUT/smoke.log" | tee -a "$SUMMARY"
fi

# ---- compute-sanitizer -------------------------------------------------------------------------
if want sanitize; then
  if command -v compute-sanitizer >/dev/null 2>&1; then
    run_stage memcheck 240 "$OUT/memcheck.log" compute-sanitizer --tool memcheck \
      --error-exitcode 3 "${TSX[@]}" bench/cuda-sanitize.ts
    grep -E "ERROR SUMMARY|passed" "$OUT/memcheck.log" | tee -a "$SUMMARY"
    run_stage racecheck 300 "$OUT/racecheck.log" compute-sanitizer --tool racecheck --racecheck-report all \
      --error-exitcode 3 "${TSX[@]}" bench/cuda-sanitize.ts
    grep -E "RACECHECK SUMMARY|ERROR SUMMARY|passed" "$OUT/racecheck.log" | tee -a "$SUMMARY"
  else
    note "sanitize: compute-sanitizer not found"
  fi
fi

# ---- bench -------------------------------------------------------------------------------------
if want bench; then
  run_stage bench 420 "$OUT/bench.log" "${TSX[@]}" bench/cuda.bench.ts --time 0.5
  cp bench/results/cuda-*.json "$OUT/" 2>/dev/null
  grep -vE "^npm warn" "$OUT/bench.log" | tail -40
fi

echo "==== summary"
cat "$SUMMARY"
