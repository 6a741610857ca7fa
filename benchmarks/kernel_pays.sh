#!/usr/bin/env bash
# Does the C BatchNorm kernel (sowmeta/moments/native.py) still pay? Its gain in collection
# (benchmarks/collect_overhead.py, in-memory cases) and in synthesis (benchmarks/synth_speed.py),
# measured one after the other in one sitting, REPEAT times, with the load average before each.
# kernel_gain_<case> = time without the kernel / time with it (> 1: the kernel pays).
# Usage: bash benchmarks/kernel_pays.sh [REPEAT]      (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-3}
for i in $(seq 1 "$repeat"); do
  echo "== sitting $i of $repeat, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  python benchmarks/collect_overhead.py --jpegs /nonexistent --rounds 3
  python benchmarks/synth_speed.py --rounds 3
done
