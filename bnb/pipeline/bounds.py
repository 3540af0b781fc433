"""``bnb bounds``: output bounds of a network over the input boxes of a property."""
from __future__ import annotations

import dataclasses

import torch

from bnb.engine.bound_options import bound_options
from bnb.errors import BnbError
from bnb.io.onnx_loader import load_onnx
from bnb.io.vnnlib import parse_vnnlib
from bnb.pipeline.verify import resolve_device
from relaxations.lp.layer_hull import P1TooLarge
from relaxations.methods import METHODS
from relaxations.methods import output_bounds as method_bounds
from relaxations.milp import MILPNotOptimal
from relaxations.network import UnsupportedNetwork


def output_bounds(network, spec, method, cfg):
    """``[(lower list, upper list)]``, one pair per input box."""
    if method not in METHODS:
        raise BnbError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
    model = load_onnx(network)
    prop = parse_vnnlib(spec, model.network.in_size, model.network.out_size)
    for s in prop.specs:
        model.check(s.lower, s.upper)
    dtype = torch.float64 if cfg.general.dtype == "float64" else torch.float32
    net = model.network.to(device=resolve_device(cfg.general.device), dtype=dtype)
    # `bnb bounds` has always bounded the rounding, whatever bounds.fp_sound says
    opts = dataclasses.replace(bound_options(cfg), rigorous=True)
    out = []
    for s in prop.specs:
        lo = torch.tensor(s.lower, dtype=dtype, device=net.device)[None]
        hi = torch.tensor(s.upper, dtype=dtype, device=net.device)[None]
        try:
            lb, ub = method_bounds(net, lo, hi, method, opts, iters=cfg.bounds.alpha_iters)
        except P1TooLarge as e:
            raise BnbError(f"method p1 refuses this network: {e}; use lp, anderson or mn instead",
                           network) from None
        except MILPNotOptimal as e:
            raise BnbError(f"method milp: {e}", network) from None
        except UnsupportedNetwork as e:
            raise BnbError(str(e), network) from None
        out.append((lb[0].double().cpu().tolist(), ub[0].double().cpu().tolist()))
    return out
