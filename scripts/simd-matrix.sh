#!/usr/bin/env bash
# The issue-10 portability matrix: the reference's pytest suite with PyTorch held at each CPU
# capability, and the engine's numeric suites (parity, golden, model) with the engine's SIMD
# level capped at each of scalar / avx2 / avx512. Writes one JSON record per run to $1 (default
# bench/results/simd-matrix.json) with the pass/fail counts and the CPU it ran on. Slow (about
# 15 min on 2 cores); not part of npm test, which reruns the golden comparisons at the portable
# PyTorch capability only.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/simd-matrix.json}
py=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
commit=$(git rev-parse --short HEAD)
trap 'rm -rf "$tmp"' EXIT

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
family=$(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
model=$(grep -m1 '^model\s*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
avx512=$(grep -qw avx512f /proc/cpuinfo && echo true || echo false)
records=()

for cap in default avx2 avx512; do
  echo "== pytest, ATEN_CPU_CAPABILITY=$cap" >&2
  set +e
  (cd training && ATEN_CPU_CAPABILITY=$cap "$py" -m pytest -q -p no:cacheprovider tests) > "$tmp/py-$cap.log" 2>&1
  rc=$?
  set -e
  line=$(grep -E '[0-9]+ (passed|failed)' "$tmp/py-$cap.log" | tail -1)
  passed=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  failed=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  skipped=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)
  echo "   $line" >&2
  records+=("{\"suite\":\"pytest training/tests\",\"env\":\"ATEN_CPU_CAPABILITY=$cap\",\"passed\":$passed,\"failed\":$failed,\"skipped\":$skipped,\"exit\":$rc}")
done

for simd in scalar avx2 avx512; do
  echo "== vitest test/parity test/golden test/model (not packaging), AV_SIMD=$simd" >&2
  set +e
  AV_SIMD=$simd npx vitest run test/parity test/golden test/model --exclude test/parity/packaging.test.ts --reporter=json --outputFile="$tmp/vt-$simd.json" > "$tmp/vt-$simd.log" 2>&1
  rc=$?
  set -e
  read -r passed failed skipped < <(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(r.numPassedTests, r.numFailedTests, r.numPendingTests + r.numTodoTests);' "$tmp/vt-$simd.json")
  echo "   $passed passed, $failed failed, $skipped skipped" >&2
  records+=("{\"suite\":\"vitest test/parity test/golden test/model, without packaging.test.ts\",\"env\":\"AV_SIMD=$simd\",\"passed\":$passed,\"failed\":$failed,\"skipped\":$skipped,\"exit\":$rc}")
done

{
  printf '{\n  "what": "issue 10 portability matrix (scripts/simd-matrix.sh)",\n'
  printf '  "date": "%s",\n  "commit": "%s",\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$commit"
  printf '  "cpu": "%s (family %s model %s), avx512: %s, %s cores",\n' "$cpu" "$family" "$model" "$avx512" "$(nproc)"
  printf '  "torch": "%s",\n  "runs": [\n' "$("$py" -c 'import torch; print(torch.__version__)')"
  for i in "${!records[@]}"; do
    sep=,; [ "$i" -eq $((${#records[@]} - 1)) ] && sep=
    printf '    %s%s\n' "${records[$i]}" "$sep"
  done
  printf '  ]\n}\n'
} > "$out"
cat "$out"
