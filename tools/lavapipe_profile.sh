#!/usr/bin/env bash
# Profiles a command's compiled shaders on lavapipe: builds the LD_PRELOAD shim
# (tools/lavapipe_jit_dump.c), runs the command under it and under `perf record`, and prints where
# the time went (tools/lavapipe_jit_report.py). The modules' LLVM IR (NNNN.ll) and object code
# (NNNN.o) stay in the output folder for reading.
#
#   tools/lavapipe_profile.sh OUT_DIR COMMAND [ARGS...]
#   e.g. tools/lavapipe_profile.sh /tmp/jit target/release/plasticity train --episodes 8 --neurons 256 --batch 16
#
# Needs gcc, perf (Debian's linux-perf; cpu-clock sampling works without hardware counters),
# objdump and Mesa's lavapipe with its LLVM (libLLVM-15.so.1 on Debian 12). Compiling with object
# output makes the first run of each shader slower: time the command with bench, not here.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR COMMAND [ARGS...]" >&2
  exit 2
fi
out=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
for tool in gcc perf objdump python3; do
  command -v "$tool" >/dev/null || { echo "lavapipe_profile: $tool not found (apt-get install gcc linux-perf binutils python3)" >&2; exit 1; }
done
llvm=$(ldconfig -p | awk '/libLLVM-[0-9]+\.so\.1 / {print $NF; exit}')
if [ -z "$llvm" ]; then
  echo "lavapipe_profile: no libLLVM-N.so.1 found (lavapipe's LLVM: apt-get install mesa-vulkan-drivers)" >&2
  exit 1
fi
mkdir -p "$out"
rm -f "$out"/[0-9][0-9][0-9][0-9].ll "$out"/[0-9][0-9][0-9][0-9].o "$out"/addresses "$out"/perf.data
gcc -O2 -Wall -shared -fPIC -o "$out/lavapipe_jit_dump.so" "$here/lavapipe_jit_dump.c" -ldl "$llvm"
MESA_SHADER_CACHE_DISABLE=true LAVAPIPE_JIT_DIR="$out" LAVAPIPE_JIT_OBJECTS=1 LD_PRELOAD="$out/lavapipe_jit_dump.so" \
  perf record -q -e cpu-clock -F 2000 -o "$out/perf.data" -- "$@"
if [ ! -s "$out/addresses" ]; then
  echo "lavapipe_profile: no shader was compiled through the shim (is the adapter lavapipe, and does it import LLVMRunPasses?)" >&2
  exit 1
fi
python3 "$here/lavapipe_jit_report.py" "$out"
