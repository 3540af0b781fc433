"""Settings chosen from the network and the property, for runs nobody tuned (``general.preset``).

Like nnenum's presets: a network with few inputs (low-dimensional control networks such as ACAS Xu, and
VNN-COMP's other 3-14 input reachability families) gets the input-splitting settings measured on ACAS Xu
(``configs/acasxu.yaml``: CROWN at the root and on the children, look-ahead between the smart and the widest
dimension, alpha-CROWN children once a run is long, dense sampling for the attack); any other ReLU network
(image classifiers) gets the ReLU-splitting settings measured on mnist_fc (``configs/mnist_fc.yaml``), and any
other network with other activations the activation-splitting settings measured on eran_mnist_sigmoid
(``configs/eran_mnist_sigmoid.yaml``).

A preset changes **only options still at their built-in default and not given by a configuration file
or ``--set``** (even to the default value): what the user chose wins, so the benchmark configurations
behave exactly as before. ``general.preset: none`` turns presets off.
"""
from __future__ import annotations

import copy
from dataclasses import fields

from bnb.config import Config, explicit

INPUT_DIMS = 16  # at most this many inputs: input splitting (the rule of bab.branching: auto)

PRESETS = {
    "input": {
        "attack": {"samples": 65536},
        "bounds": {"method": "crown"},
        "bab": {"branching": "input", "input_heuristic": "mixed", "input_lookahead": 2,
                "input_alpha_after": 5000, "input_alpha_iters": 10},
    },
    "relu": {
        "bounds": {"alpha_iters": 50},
        "bab": {"branching": "relu", "batch_size": 256},
    },
    "activation": {  # configs/eran_mnist_sigmoid.yaml's (docs/performance.md, "Activation splitting")
        "bounds": {"alpha_iters": 20, "alpha_lr": 0.3},
        "bab": {"branching": "activation", "activation_alpha_iters": 10, "activation_retighten_depth": 4,
                "batch_size": 32},
    },
}


def choose(net, prop=None) -> str:
    """The preset for ``net`` (and its property): ``input`` for at most :data:`INPUT_DIMS` inputs (few
    inputs make bisecting the box cheap and complete), else ``relu`` for a ReLU network and ``activation``
    (activation splitting) for a network with other activations (sigmoid, tanh, ...)."""
    if net.in_size <= INPUT_DIMS:
        return "input"
    return "relu" if getattr(net, "relu_only", True) else "activation"


def apply(cfg: Config, net, prop=None) -> tuple[Config, str | None, dict]:
    """``(config, preset name or None, {option: value} changed)``; ``cfg`` itself is not modified."""
    name = cfg.general.preset
    if name == "none":
        return cfg, None, {}
    if name == "auto":
        name = choose(net, prop)
        if name is None:
            return cfg, None, {}
    default = Config()
    out = copy.deepcopy(cfg)
    changed, given = {}, explicit(cfg)
    for sec, values in PRESETS[name].items():
        obj, base = getattr(out, sec), getattr(default, sec)
        known = {f.name for f in fields(obj)}
        for key, value in values.items():
            assert key in known, f"preset {name}: unknown option {sec}.{key}"
            if f"{sec}.{key}" not in given and getattr(obj, key) == getattr(base, key) and value != getattr(obj, key):
                setattr(obj, key, value)
                changed[f"{sec}.{key}"] = value
    return out, name, changed
