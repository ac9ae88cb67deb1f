#!/usr/bin/env bash
# Head-to-head on this machine: our engine's bench, then the PyTorch baseline (tools/pytorch_baseline.py)
# on the same sizes, one after the other; prints episodes per second and peak memory side by side with
# their ratios. Then, where the engine can export an episode, checks its loss and gradients against
# PyTorch's autograd in float64, for the paper's rule and five other rule configurations.
#
# Usage: tools/compare_pytorch.sh [--neurons N] [--batch B1,B2] [--torch-batch B1,B2] [--steps T]
#                                 [--reps R] [--device cpu|cuda] [--torch-threads K] [--out DIR]
#   --batch        our batch sizes (default 1,16)
#   --torch-batch  PyTorch's (default 1,16); each size after the first is tried only if the bytes
#                  autograd kept at the first size, scaled by batch, fit in 90% of the available memory
#   --device       where PyTorch runs (default cpu); our engine uses whichever adapter wgpu picks
#   --torch-threads  PyTorch's CPU threads (default: one per core; fewer on a machine busy with other work)
# PLASTICITY=path/to/plasticity uses an already built engine instead of `cargo run --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

neurons=1000 batch=1,16 torch_batch=1,16 steps=106 reps=2 device=cpu torch_threads="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --neurons) neurons=$2 ;;
    --batch) batch=$2 ;;
    --torch-batch) torch_batch=$2 ;;
    --steps) steps=$2 ;;
    --reps) reps=$2 ;;
    --device) device=$2 ;;
    --torch-threads) torch_threads=$2 ;;
    --out) out=$2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "compare_pytorch: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
out=${out:-$(mktemp -d -t compare_pytorch.XXXXXX)}
mkdir -p "$out"

if [ -n "${PLASTICITY:-}" ]; then
  engine=("$PLASTICITY")
  binary=$PLASTICITY
else
  engine=(cargo run -q -p runtime --release --)
  binary=target/release/plasticity
fi

echo "== our engine: N = $neurons, B = $batch, T = $steps (load average $(cut -d" " -f1 /proc/loadavg))"
# The memory-growth figure is not part of this comparison: keep it to a trivial size.
"${engine[@]}" bench --neurons "$neurons" --batch "$batch" --steps "$steps" --reps "$reps" \
  --memory-size 16,1 --memory-steps 2 --json "$out/ours.json"

IFS=, read -r -a torch_batches <<< "$torch_batch"
for b in "${torch_batches[@]}"; do
  if [ "$b" != "${torch_batches[0]}" ]; then
    # Predict this size's need from the first size's autograd bytes; skip it if it cannot fit.
    if ! python3 - "$out/torch_b${torch_batches[0]}.json" "$b" "$device" <<'EOF'
import json, sys
first = json.load(open(sys.argv[1]))["cases"][0]
batch, device = int(sys.argv[2]), sys.argv[3]
if not first["fits"]:
    sys.exit(f"PyTorch B = {batch}: skipped, B = {first['batch']} did not fit")
need = first["autograd_saved_bytes"] / first["batch"] * batch
if device == "cuda":
    import torch
    available = torch.cuda.mem_get_info()[0]
else:
    available = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemAvailable:"))
fits = need < 0.9 * available
print(f"PyTorch B = {batch}: autograd needs about {need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available:",
      "trying it" if fits else "skipped, does not fit")
sys.exit(0 if fits else 1)
EOF
    then
      continue
    fi
  fi
  echo "== PyTorch: N = $neurons, B = $b, T = $steps, device $device (load average $(cut -d" " -f1 /proc/loadavg))"
  python3 tools/pytorch_baseline.py bench --neurons "$neurons" --batch "$b" --steps "$steps" --reps "$reps" \
    --device "$device" ${torch_threads:+--threads "$torch_threads"} --json "$out/torch_b$b.json" || true
done

echo
python3 - "$out/ours.json" "$out"/torch_b*.json <<'EOF'
import json, sys
ours_doc = json.load(open(sys.argv[1]))
torch_docs = [json.load(open(p)) for p in sys.argv[2:]]
ours = {(c["neurons"], c["batch"]): c for c in ours_doc["cases"]}
torch = {(c["neurons"], c["batch"]): c for d in torch_docs for c in d["cases"] if c["fits"]}
mib = lambda b: b / 2**20
print(f"ours: {ours_doc['adapter']['name']} ({ours_doc['adapter']['device_type']})")
if torch_docs:
    d = torch_docs[0]
    print(f"PyTorch {d['torch']} on {d['device']}, {d['threads']} threads; peak memory: {d['peak_memory']}")
print(f"\n{'N':>6} {'B':>4} {'T':>4} | {'ours ep/s':>10} {'torch ep/s':>11} {'ours/torch':>11} | "
      f"{'ours MiB':>9} {'torch MiB':>10} {'torch/ours':>11} {'autograd MiB':>13}")


def cell(value, width, spec, unit=""):
    return (format(value, spec) + unit if value is not None else "-").rjust(width)


for key in sorted(set(ours) | set(torch)):
    o, t = ours.get(key), torch.get(key)
    both = o is not None and t is not None
    print(f"{key[0]:>6} {key[1]:>4} {(o or t)['steps']:>4} | "
          f"{cell(o and o['episodes_per_s'], 10, '.4f')} {cell(t and t['episodes_per_s'], 11, '.4f')} "
          f"{cell(o['episodes_per_s'] / t['episodes_per_s'] if both else None, 11, '.2f', 'x')} | "
          f"{cell(o and mib(o['peak_bytes']), 9, '.1f')} {cell(t and mib(t['peak_bytes']), 10, '.1f')} "
          f"{cell(t['peak_bytes'] / o['peak_bytes'] if both else None, 11, '.1f', 'x')} "
          f"{cell(t and mib(t['autograd_saved_bytes']), 13, '.1f')}")
print("(autograd MiB: what PyTorch's autograd kept for the backward pass, a lower bound of its peak)")

# The same memory budget: which of our batch sizes fit in PyTorch's single-episode peak.
for (n, b), t in sorted(torch.items()):
    if b != 1:
        continue
    fitting = [o for (on, _), o in ours.items() if on == n and o["peak_bytes"] <= t["peak_bytes"]]
    for o in sorted(fitting, key=lambda o: o["batch"]):
        print(f"N = {n}: our B = {o['batch']} ({mib(o['peak_bytes']):.1f} MiB) fits in PyTorch's B = 1 memory "
              f"({mib(t['peak_bytes']):.1f} MiB) and trains {o['episodes_per_s'] / t['episodes_per_s']:.2f}x "
              f"PyTorch's B = 1 episodes per second")
    for o in sorted((o for (on, _), o in ours.items() if on == n and o not in fitting), key=lambda o: o["batch"]):
        print(f"N = {n}: our B = {o['batch']} ({mib(o['peak_bytes']):.1f} MiB) does not fit in PyTorch's B = 1 "
              f"memory ({mib(t['peak_bytes']):.1f} MiB)")
EOF
echo "figures: $out"

# The paper's rule first, then rule options that between them cover every rule, clip, alpha and eta
# shape, both modulations, direct and retroactive, and no plastic self-connections.
rules=(
  ""
  "--rule oja --trace-clip 1 --eta-shape per-neuron --no-plastic-self"
  "--rule additive --trace-clip 2 --modulation simple --alpha per-neuron"
  "--modulation per-neuron --eta-shape per-neuron"
  "--modulation per-neuron --retroactive --trace-clip 1 --alpha scalar --eta-shape per-neuron"
  "--rule oja --modulation simple --retroactive"
)
if "$binary" export-episode --help > /dev/null 2>&1; then
  echo
  echo "== gradient check: our engine against PyTorch autograd (float64), one episode per rule"
  check_status=0
  for k in "${!rules[@]}"; do
    # shellcheck disable=SC2086 # each entry is a list of options
    "$binary" export-episode --neurons 64 --batch 3 --steps 20 --seed 1 --out "$out/episode$k" ${rules[$k]}
    python3 tools/pytorch_baseline.py check "$out/episode$k" || check_status=1
  done
  [ "$check_status" = 0 ] && echo "gradient check: every rule passed" || { echo "gradient check: FAILED (above)"; exit 1; }
else
  echo "($binary has no export-episode command yet: gradient check skipped)"
fi
