"""Root lower bounds of mn-crown's constraint sources on three small random networks, against the LP and the MILP.

    python benchmarks/mn_small_nets.py [--iters 100] [--row 0]

The networks of ``tests/test_multineuron.py`` (``random_fc`` 4-16-16-16-3 with seeds 0 and 1, 3-12-12-2 with
seed 2; float64; input box ``[-1, 1]^n``; rows of the identity). For row ``--row`` of each: alpha-CROWN
(``--iters`` steps), mn-crown with k-neuron group hulls, with Anderson cuts and with both (``--iters`` steps),
the Anderson LP (:func:`relaxations.lp.anderson.anderson_bounds`, the triangle LP with separated Anderson cuts,
on alpha-CROWN's intermediate bounds) and the exact minimum (:func:`relaxations.milp.milp_bounds`). Prints a
markdown table (docs/performance.md, "Anderson cuts in the back-substitution").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from relaxations.lp.anderson import anderson_bounds  # noqa: E402
from relaxations.methods import bound_rows  # noqa: E402
from relaxations.milp import milp_bounds  # noqa: E402
from relaxations.optimize import optimized  # noqa: E402
from relaxations.options import BoundOptions, MultiNeuronOptions  # noqa: E402
from relaxations.state import DomainState  # noqa: E402

NETS = [([4, 16, 16, 16, 3], 0), ([4, 16, 16, 16, 3], 1), ([3, 12, 12, 2], 2)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=100, help="alpha-CROWN and mn-crown steps")
    ap.add_argument("--row", type=int, default=0, help="output row bounded")
    a = ap.parse_args(argv)
    from tests.conftest import random_fc  # the networks of the tests
    torch.set_num_threads(1)
    print("| network | alpha | hull | anderson | both | Anderson LP | exact (MILP) |")
    print("|---|---|---|---|---|---|---|")
    for widths, seed in NETS:
        net = random_fc(widths, seed).to(dtype=torch.float64)
        lo = -torch.ones(1, widths[0], dtype=torch.float64)
        hi = torch.ones(1, widths[0], dtype=torch.float64)
        C = torch.eye(widths[-1], dtype=torch.float64)
        state = DomainState(lo, hi)
        alpha = optimized(net, state, C, iters=a.iters)
        values = [float(alpha.lb[0, a.row])]
        for cuts in ("hull", "anderson", "both"):
            mn = bound_rows(net, state, C, "mn-crown", BoundOptions(mn=MultiNeuronOptions(cuts=cuts)), iters=a.iters)
            values.append(float(mn.lb[0, a.row]))
        pre = [(lb[0].numpy(), ub[0].numpy()) for lb, ub in alpha.pre_bounds]
        lp, _ = anderson_bounds(net, lo[0].numpy(), hi[0].numpy(), C.numpy(), pre_bounds=pre)
        exact, _ = milp_bounds(net, lo[0].numpy(), hi[0].numpy(), C.numpy())
        values += [float(lp[a.row]), float(exact[a.row])]
        name = "-".join(map(str, widths)) + f", seed {seed}, row {a.row}"
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |", flush=True)


if __name__ == "__main__":
    main()
