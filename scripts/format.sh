#!/usr/bin/env bash
# npm run format: prettier for TypeScript/JavaScript, clang-format for C++/CUDA when installed
# (Debian: apt-get install clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
npx prettier --write 'src/**/*.ts' 'test/**/*.ts' 'bench/**/*.ts' 'scripts/*.cjs'
if command -v clang-format >/dev/null 2>&1; then
  find native cuda -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' | xargs clang-format -i
else
  echo "format: clang-format not found; C++/CUDA files left as they are" >&2
fi
