"""Typed configuration: every option declared once, with its default and help text.

Precedence: defaults < YAML files (``--config``, in order) < command line (``--set section.key=value``).
Unknown sections or keys and ill-typed values raise :class:`~bnb.errors.ConfigError` naming the file,
the key and the closest known key.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bnb.errors import ConfigError
from relaxations.options import DEFAULTS as BOUNDS


def opt(default, help: str, choices: tuple | None = None):
    """Declare an option: its default, one line of help, and optionally the allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class GeneralConfig:
    device: str = opt("auto", "where bounds are computed: auto (cuda when available), cpu or cuda",
                      ("auto", "cpu", "cuda"))
    dtype: str = opt("float32", "floating point type of bound computations", ("float32", "float64"))
    seed: int = opt(0, "random seed of attacks and sampling")
    timeout: float = opt(300.0, "wall-clock limit per instance in seconds (in `bnb run`, each row's own timeout wins)")
    threads: int = opt(0, "torch CPU threads (0: torch's default)")
    verbose: bool = opt(False, "print progress of long runs to stderr")
    preset: str = opt("auto",
                      "settings chosen from the network for options left at their defaults (bnb/pipeline/presets.py): "
                      "auto (input splitting as for ACAS Xu with <= 16 inputs, ReLU splitting as for mnist_fc "
                      "otherwise), input, relu, or none", ("auto", "input", "relu", "none"))
    proof_only: bool = opt(False, "turn off every falsification (the attack before bounding, candidate points and "
                           "PGD inside branch and bound): a run can then only answer unsat, unknown, timeout or "
                           "error, so unsat on a violated property is a soundness bug (for soundness tests; "
                           "`--proof-only` on the command line)")


@dataclass
class AttackConfig:
    enabled: bool = opt(True, "run PGD falsification before bounding")
    restarts: int = opt(64, "random starting points per input box and output polytope")
    samples: int = opt(4096, "uniform random samples per box and polytope; the best ones start PGD")
    steps: int = opt(100, "PGD steps per run")
    step_size: float = opt(0.1, "initial step as a fraction of each input's box width (decays to 1/1000)")
    max_batch: int = opt(8192, "largest number of points attacked at once")
    bound_first: int = opt(500, "on networks with at most this many ReLU neurons, bound every (box, polytope) pair "
                           "with CROWN first (milliseconds there) and attack only the pairs it does not refute "
                           "(0: always attack first)")


@dataclass
class BoundsConfig:
    # the bounding methods' own options take their defaults from relaxations.options (listed there once)
    method: str = opt("alpha", "bounding method of the root domain (mn-crown: alpha-CROWN, then k-neuron group "
                      "hull constraints taken with optimised multipliers; ReLU-split children keep them as "
                      "bab.mn_children_gain says; on sigmoid / tanh / softplus layers the multi-input hull cuts of "
                      "each neuron over its input box instead, which activation-split children keep)",
                      ("ibp", "crown", "dp0", "dp1", "alpha", "beta", "mn-crown"))
    intermediate: str = opt(BOUNDS.intermediate,
                            "how intermediate (pre-ReLU) bounds are computed by crown, dp0 and dp1: backward CROWN, "
                            "forward linear bounds (cheap for few inputs) or IBP (alpha, beta and mn-crown always "
                            "start from backward CROWN)", ("crown", "forward", "ibp"))
    lower_slope: str = opt(BOUNDS.lower_slope, "CROWN lower slope of unstable ReLUs", ("adaptive", "zero", "one"))
    alpha_iters: int = opt(30, "alpha-CROWN iterations at the root")
    alpha_lr: float = opt(BOUNDS.alpha_lr, "Adam step size of the slopes")
    beta_lr: float = opt(BOUNDS.beta_lr, "Adam step size of the split multipliers")
    fp_sound: bool = opt(BOUNDS.rigorous, "bound the floating-point rounding of every CROWN/alpha/beta/forward bound "
                         "rigorously (docs/soundness.md; IBP always is); off only to measure its cost: proofs then "
                         "ignore rounding")
    mn_k: int = opt(BOUNDS.mn.k, "mn-crown: neurons per group hull (2 or 3; 3 gives ~10x more constraints)")
    mn_max_groups: int = opt(BOUNDS.mn.max_groups,
                             "mn-crown: groups per ReLU layer (the widest unstable neurons first)")
    mn_time: float = opt(BOUNDS.mn.time_budget,
                         "mn-crown: time budget in seconds for computing the constraints at the root")
    mn_iters: int = opt(BOUNDS.mn.octa_iters, "mn-crown: alpha-CROWN steps of each group's octahedral bounds")
    mn_cuts: str = opt(BOUNDS.mn.cuts, "mn-crown: where the constraints come from: k-neuron group hulls, Anderson cuts "
                       "(separated at the root's triangle-LP optima of the open rows), or both (ReLU layers; "
                       "smooth layers always get hull cuts)",
                       ("hull", "anderson", "both"))
    mn_rounds: int = opt(BOUNDS.mn.rounds, "mn-crown: Anderson separation rounds per output row (each one LP solve)")
    mn_tighten: bool = opt(BOUNDS.mn.tighten,
                           "mn-crown: tighten the root's intermediate bounds layer by layer: before building a "
                           "layer's group hulls, re-bound its unstable neurons by rigorous alpha-CROWN with the "
                           "earlier layers' constraints (children inherit the bounds)")
    mn_tighten_time: float = opt(BOUNDS.mn.tighten_time,
                                 "mn-crown with mn_tighten: seconds of re-bounding at the root (apart from mn_time, "
                                 "which the hulls keep); later layers keep their bounds")
    mn_hull_cuts: int = opt(BOUNDS.mn.hull_cuts,
                            "mn-crown on sigmoid / tanh / softplus layers: most multi-input hull cuts per layer "
                            "(separated at the points the open rows' coefficients select, within mn_time; "
                            "relaxations/hull_cuts.py)")
    mn_hull_rounds: int = opt(BOUNDS.mn.hull_rounds,
                              "mn-crown on sigmoid / tanh / softplus layers: separation rounds of the hull cuts "
                              "(each round adds cuts at the points the last bound's coefficients select and "
                              "optimises again)")
    gamma_lr: float = opt(BOUNDS.gamma_lr, "Adam step size of the multi-neuron constraint multipliers")
    mix_iters: int = opt(BOUNDS.mix_iters,
                         "ascent steps mixing the rows of a multi-row output polytope into one bound (0: row by row)")
    lp_refine: bool = opt(False, "tighten the root's intermediate bounds neuron by neuron by LP before branching")
    lp_refine_time: float = opt(BOUNDS.lp_refine_time, "time budget of the LP refinement in seconds")
    sign_refine: bool = opt(False, "before branching, prove the sign of near-stable neurons of the first layers "
                                   "(an exact MILP's hint, proven by branch and bound on the network cut before "
                                   "the layer, falsification off) and fix them; the root bound is then recomputed")
    sign_layers: int = opt(2, "sign_refine: ReLU layers 1 .. sign_layers are refined (layer 0's bounds are exact)")
    sign_max: int = opt(32, "sign_refine: at most this many near-stable neurons per layer, closest to stable first")
    sign_time: float = opt(10.0, "sign_refine: seconds for hints and proofs together")
    lp_solver: str = opt(BOUNDS.lp_solver, "LP solver used through cvxpy", ("HIGHS", "CLARABEL", "SCS"))


@dataclass
class BabConfig:
    enabled: bool = opt(True, "branch and bound after the root bound (off: answer unknown instead)")
    branching: str = opt("auto", "what to split: input box, ReLU phases, partition (ReLU phases layer by layer: "
                         "convex input polytopes along activation hyperplanes), activation (a neuron of any "
                         "activation split at a point of its pre-activation interval: sigmoid / tanh networks), or "
                         "auto (input for <= 16 inputs, else relu on ReLU networks, activation on the others)",
                         ("auto", "input", "relu", "partition", "activation"))
    input_heuristic: str = opt("smart", "input dimension to split: widest, smart (|coefficient| x width), sb "
                               "(alpha-beta-CROWN smart branching), smear (interval gradient x width), mixed "
                               "(look-ahead between smart and widest), brute-force (look-ahead over every "
                               "dimension), or a plug-in module:function / file.py:function (heuristics/registry.py)")
    input_lookahead: int = opt(1, "bound the children of this many best-scored input dimensions and keep the "
                               "split that leaves the least unverified margin (1: no look-ahead)")
    input_split_parts: int = opt(2, "parts an input dimension is split into (2: bisection)")
    sb_margin: float = opt(0.0, "sb: weight of each polytope's refutation value (its margin term) in the score")
    relu_heuristic: str = opt("babsr", "ReLU neuron to split: babsr (with multi-neuron constraints, on the "
                              "coefficient before their terms), babsr-gamma (babsr on the coefficient after them), "
                              "babsr-bias (with its bias term), intercept, "
                              "width, random (seeded baseline), fsb / kfsb (filtered smart branching, per layer / "
                              "overall), acs (by the multipliers of the multi-neuron constraints involving it, "
                              "with bounds.method mn-crown), deepsplit (babsr plus the neuron's indirect effect: "
                              "the relaxation error it induces in later layers' unstable neurons, after VeriNet's "
                              "DeepSplit), or a plug-in module:function / file.py:function")
    fsb_topk: int = opt(3, "fsb / kfsb: candidates per score (babsr-bias and intercept), per layer for fsb, over "
                        "the network for kfsb; all their children are bounded in one batched pass")
    deepsplit_weight: float = opt(1.0, "deepsplit: weight of the indirect term (the relaxation error a neuron "
                                  "induces in later layers' unstable neurons) against babsr's direct one")
    relu_lookahead: int = opt(1, "bound both children of this many best-scored neurons (with the parent's slopes "
                              "and multipliers, no optimisation) and split the one that leaves the least "
                              "unverified margin (1: no look-ahead)")
    activation_heuristic: str = opt("gap-gain", "activation splitting: neuron to split: interval (widest interval), "
                                    "gap (|coefficient| x the gap between its relaxation's lines), gap-gain "
                                    "(|coefficient| x what the split saves of that gap in the worse child), or a "
                                    "plug-in module:function / file.py:function (heuristics/activation_split.py)")
    activation_method: str = opt("beta", "activation splitting: bounding of children (on the parent's "
                                 "intermediate bounds with the split neuron's narrowed): CROWN lines, alpha-CROWN "
                                 "warm-started from the parent, or beta (alpha-CROWN with multipliers of every "
                                 "neuron's interval constraints, the split ones among them)",
                                 ("crown", "alpha", "beta"))
    activation_alpha_iters: int = opt(5, "activation splitting with activation_method alpha / beta: steps per child")
    activation_min_width: float = opt(1e-6, "activation splitting: a neuron narrower than this share of its root "
                                      "interval is not split again (a domain with none left is undecided: unknown)")
    activation_retighten_depth: int = opt(0, "activation splitting: children at most this deep re-bound the "
                                          "intermediate bounds of every layer by CROWN (intersected with the "
                                          "parent's; 0: children keep the parent's but for the split neuron)")
    batch_size: int = opt(1024, "domains branched per iteration (each gives two children)")
    order: str = opt("best", "which domains to branch first: lowest bound, or deepest", ("best", "depth"))
    polytopes: str = opt("joint", "the output polytopes a box's root bound leaves open (e.g. the nine 'another "
                         "class wins' of a robustness property): joint: one tree, a domain open until each is "
                         "refuted on it; each: one tree per polytope, worst root margin first, bounding only its "
                         "rows and splitting only for it (alpha-beta-CROWN's search per target label; a "
                         "certificate then holds one tree per polytope)", ("joint", "each"))
    max_domains: int = opt(500000, "stored domains beyond which the queue switches to depth-first")
    input_method: str = opt("crown", "bounding of children under input splitting", ("crown", "alpha"))
    input_alpha_after: int = opt(0, "switch the children's bounding to alpha-CROWN after this many branches "
                                 "(0: never); easy instances keep cheap CROWN, hard near-tight ones get alpha")
    input_alpha_iters: int = opt(5, "alpha iterations per child under input splitting (input_method alpha)")
    input_alpha_intermediate: bool = opt(False, "with input_method alpha, also optimise the slopes of intermediate "
                                         "layers (tighter, but ~20x slower per child on ACAS Xu)")
    relu_method: str = opt("beta", "bounding of children under ReLU splitting: beta-CROWN, beta-CROWN "
                           "tightened by the triangle LP per domain (small networks), or beta-CROWN with the "
                           "root's multi-neuron constraints (computed there if bounds.method is not mn-crown; "
                           "with mn-crown at the root children keep them as mn_children_gain says)",
                           ("beta", "lp", "mn-crown"))
    mn_children_gain: float = opt(0.0, "ReLU splitting after an mn-crown root: children keep the root's "
                                  "constraints only if these closed at least this share of alpha-CROWN's negative "
                                  "root margin; else they are bounded by plain beta-CROWN (on the root's intermediate "
                                  "bounds, tightened ones included); 0: always keep them")
    beta_iters: int = opt(10, "beta-CROWN iterations per child under ReLU splitting (warm-started)")
    retighten_depth: int = opt(0, "ReLU splitting: children at most this deep re-bound their intermediate bounds "
                               "by CROWN with their split phases (intersected with the parent's; 0: children "
                               "keep the parent's)")
    clauses: bool = opt(False, "ReLU splitting: learn clauses from verified children (their split literals less "
                        "the least influential, kept only when a bound of that smaller set of splits verifies it "
                        "again) and use them as nogoods: drop the domains inside a clause, split the last free "
                        "neuron of a clause the other way (unit propagation; under partition branching it may fix "
                        "a later layer's neuron first: domains stay sound, not always convex); "
                        "bnb/engine/clauses.py")
    clause_cap: int = opt(1000, "with clauses: most clauses kept (the shortest first)")
    clause_reverify: int = opt(64, "with clauses: most candidate clauses re-verified per iteration (one batched "
                               "bound, the shortest candidates first)")
    clause_iters: int = opt(20, "with clauses: beta-CROWN iterations of each candidate's re-verification "
                            "(warm-started from the child it came from)")
    clause_share: float = opt(0.1, "with clauses: most share of the branch-and-bound time spent learning clauses "
                              "(an iteration re-verifies nothing while the clauses' time so far is above it)")
    attack_every: int = opt(10, "run PGD inside the most promising domains every this many iterations")
    attack_domains: int = opt(64, "domains attacked by each such PGD run")
    attack_steps: int = opt(20, "PGD steps inside domains")
    verify_margin: float = opt(0.0, "a domain counts as verified only if its lower bound exceeds this")


@dataclass
class Config:
    general: GeneralConfig = field(default_factory=GeneralConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    bounds: BoundsConfig = field(default_factory=BoundsConfig)
    bab: BabConfig = field(default_factory=BabConfig)


# ------------------------------------------------------------------------------- loading
def _sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value, f: dataclasses.Field, where: str, key: str):
    typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}[f.type]
    if typ is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    ok = (isinstance(value, bool) if typ is bool else
          (isinstance(value, int) and not isinstance(value, bool)) if typ is int else
          (isinstance(value, (int, float)) and not isinstance(value, bool)) if typ is float else
          isinstance(value, str))
    if not ok:
        raise ConfigError(f"'{key}' must be of type {typ.__name__}, got {value!r}", where)
    value = typ(value)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"'{key}' must be one of {', '.join(map(str, choices))}, got {value!r}"
                          f"{_suggest(str(value), map(str, choices))}", where)
    return value


def apply_mapping(cfg: Config, data: dict, where: str) -> Config:
    """Apply a ``{section: {key: value}}`` mapping onto ``cfg`` (in place), validating every key."""
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of sections (general:, attack:, ...)", where)
    sections = _sections(cfg)
    for sec, values in data.items():
        if sec not in sections:
            raise ConfigError(f"unknown section '{sec}'{_suggest(str(sec), sections)}", where)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"section '{sec}' must be a mapping of keys", where)
        obj = sections[sec]
        known = {f.name: f for f in fields(obj)}
        for key, value in values.items():
            full = f"{sec}.{key}"
            if key not in known:
                hint = _suggest(str(key), known).replace("'", f"'{sec}.", 1)
                raise ConfigError(f"unknown key '{full}'{hint}", where)
            setattr(obj, key, _coerce(value, known[key], where, full))
            explicit(cfg).add(full)
    return cfg


def explicit(cfg: Config) -> set:
    """The ``section.key`` options a YAML file or ``--set`` gave (even to their default value); presets
    (:mod:`bnb.pipeline.presets`) leave them alone. Kept on the instance, so copies and pickles carry it."""
    if "_explicit" not in cfg.__dict__:
        cfg.__dict__["_explicit"] = set()
    return cfg.__dict__["_explicit"]


def parse_override(text: str) -> dict:
    """``section.key=value`` (value in YAML syntax) -> ``{section: {key: value}}``."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like section.key=value", "--set")
    key, raw = text.split("=", 1)
    sec, name = key.strip().split(".", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return {sec: {name: value}}


def load_config(paths=(), overrides=()) -> Config:
    cfg = Config()
    for p in paths:
        p = Path(p)
        try:
            data = yaml.safe_load(p.read_text())
        except FileNotFoundError:
            raise ConfigError("no such file", p) from None
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            raise ConfigError(f"invalid YAML: {getattr(e, 'problem', e)}", p,
                              None if line is None else line + 1) from None
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", p) from None
        apply_mapping(cfg, data, str(p))
    for text in overrides:
        apply_mapping(cfg, parse_override(text), "--set")
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def render_yaml(cfg: Config, with_help: bool = True) -> str:
    """The configuration as YAML; with ``with_help`` every key carries its help text as a comment."""
    lines = []
    for sec, obj in _sections(cfg).items():
        lines.append(f"{sec}:")
        for f in fields(obj):
            value = yaml.safe_dump(getattr(obj, f.name), default_flow_style=True).strip()
            value = value.removesuffix("\n...").removesuffix("...").strip()
            comment = ""
            if with_help:
                choices = f.metadata.get("choices")
                comment = "  # " + f.metadata["help"] + (f" [{' | '.join(map(str, choices))}]" if choices else "")
            lines.append(f"  {f.name}: {value}{comment}")
        lines.append("")
    return "\n".join(lines)
