#!/usr/bin/env bash
# Regenerate the committed branching studies (docs/studies/): every instance under every heuristic,
# otherwise identical settings, one torch thread, one instance at a time.
#   benchmarks/studies.sh [acasxu|mnist_fc|deepsplit|all] [extra bnb study options, e.g. --workers 2 --resume]
# Needs the benchmarks in ../shared/benchmarks; CPU time: about 15 min (acasxu) and 30 min (mnist_fc) on
# a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-../shared/benchmarks}
which=${1:-all}
shift || true
bnb() { python -m bnb.cli.main "$@"; }

if [[ $which == acasxu || $which == all ]]; then
  # 47 instances across properties 1-5 and 9 (every 4th of the 186); look-ahead off for the scoring rules
  # (mixed and brute-force look ahead by construction)
  bnb study "$BENCH/acasxu/instances.csv" --every 4 --timeout 20 \
    --heuristics widest,smart,sb,smear,mixed,brute-force \
    --config configs/acasxu.yaml --set bab.input_lookahead=1 --set general.threads=1 \
    --out docs/studies/acasxu "$@"
fi
if [[ $which == mnist_fc || $which == all ]]; then
  # the first 20 instances of the 2x256 network (epsilon 0.03 and 0.05)
  bnb study "$BENCH/mnist_fc/instances.csv" --select 256x2 --limit 20 --timeout 20 \
    --heuristics babsr,kfsb,fsb,babsr-bias,intercept,width,random \
    --config configs/mnist_fc.yaml --set general.threads=1 \
    --out docs/studies/mnist_fc "$@"
fi
if [[ $which == deepsplit || $which == all ]]; then
  # babsr, fsb and deepsplit (indirect weight 1 and 0.1) on ten mnist_fc instances that branch (six 256x2, four
  # 256x4), 30 s each; the sample is a CSV in a temporary folder beside links to the benchmark's onnx/ and vnnlib/
  sample=$(mktemp -d)
  src=$(cd "$BENCH/mnist_fc" && pwd)
  ln -s "$src/onnx" "$sample/onnx" && ln -s "$src/vnnlib" "$sample/vnnlib"
  pat='256x2.onnx,vnnlib/prop_(1_0.03|3_0.03|5_0.03|9_0.03|13_0.03|0_0.05)\.|256x4.onnx,vnnlib/prop_(1_0.05|6_0.03|12_0.03|13_0.03)\.'
  grep -E "$pat" "$src/instances.csv" | sed 's/,[0-9]*$/,30/' > "$sample/instances.csv"
  { head -1 "$src/expected.csv"; grep -E "$pat" "$src/expected.csv"; } > "$sample/expected.csv"
  bnb study "$sample/instances.csv" \
    --heuristics babsr,fsb,deepsplit,relu=docs/studies/mnist_fc_deepsplit/deepsplit_tenth.py:deepsplit_tenth \
    --config configs/mnist_fc.yaml --set general.threads=1 --workers 1 \
    --out docs/studies/mnist_fc_deepsplit "$@"
fi
