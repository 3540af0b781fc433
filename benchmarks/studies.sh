#!/usr/bin/env bash
# Regenerate the committed branching studies (docs/studies/): every instance under every heuristic,
# otherwise identical settings, one torch thread, one instance at a time.
#   benchmarks/studies.sh [acasxu|mnist_fc|all] [extra bnb study options, e.g. --workers 2 --resume]
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
