"""Heuristics by name: the built-in ones, and users' own from a module or a Python file.

A configuration names a heuristic (``bab.input_heuristic``, ``bab.relu_heuristic``,
``bab.activation_heuristic``) by

- a registered name (``widest``, ``babsr``, ...: :func:`names`),
- ``package.module:function`` (an importable module), or
- ``path/to/file.py:function`` (a plug-in file, loaded once per process).

A heuristic maps a batch (:mod:`heuristics.base`) to its choice per domain. A user's function may instead
return *scores*: ``(N, n_in)`` per input dimension, or a list of ``(N, n_i)`` per ReLU (activation) layer (``-inf``:
never split); it is then wrapped like the built-in scoring rules (best score, or look-ahead among the
``lookahead`` best when the configuration asks for it).

The built-in modules (:mod:`heuristics.input_split`, :mod:`heuristics.relu_split`) export their table,
``HEURISTICS`` (name -> function) for the strategy ``KIND``; this module reads them (they import nothing from it).
:func:`register` adds a name at run time (a further kind too); a registered name shadows a built-in one.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
from typing import Callable

import torch

from heuristics import activation_split, input_split, relu_split

KINDS = ("input", "relu", "activation")
BUILTIN_MODULES = (input_split, relu_split, activation_split)
_REGISTERED: dict[str, dict[str, Callable]] = {k: {} for k in KINDS}
_LOADED_FILES: dict[str, object] = {}


class UnknownHeuristic(ValueError):
    """A heuristic name that is neither registered nor a loadable ``module:function``."""


def register(kind: str, name: str):
    """Decorator: register ``fn(batch) -> choice`` under ``name`` for strategy ``kind``."""
    def deco(fn):
        _REGISTERED.setdefault(kind, {})[name] = fn
        return fn
    return deco


def _table(kind: str) -> dict[str, Callable]:
    """Every named heuristic of ``kind``: the built-in ones, then the registered ones (which win on a clash)."""
    table = {}
    for module in BUILTIN_MODULES:
        if module.KIND == kind:
            table.update(module.HEURISTICS)
    table.update(_REGISTERED.get(kind, {}))
    return table


def names(kind: str) -> tuple[str, ...]:
    return tuple(_table(kind))


def _load_object(spec: str):
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise UnknownHeuristic(f"{spec!r} is not 'module:function' or 'file.py:function'")
    if mod_name.endswith(".py") or os.sep in mod_name:
        path = os.path.abspath(mod_name)
        if not os.path.isfile(path):
            raise UnknownHeuristic(f"plug-in file {mod_name!r} not found")
        module = _LOADED_FILES.get(path)
        if module is None:
            modspec = importlib.util.spec_from_file_location(f"bnb_plugin_{len(_LOADED_FILES)}", path)
            module = importlib.util.module_from_spec(modspec)
            try:
                modspec.loader.exec_module(module)
            except Exception as e:
                raise UnknownHeuristic(f"plug-in file {mod_name!r} failed to load: {type(e).__name__}: {e}") from None
            _LOADED_FILES[path] = module
    else:
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise UnknownHeuristic(f"cannot import module {mod_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UnknownHeuristic(f"{mod_name!r} has no function {attr!r}")
    return fn


def resolve(kind: str, name: str) -> Callable:
    """The heuristic ``fn(batch) -> choice`` that ``name`` designates; raises :class:`UnknownHeuristic`."""
    table = _table(kind)
    if name in table:
        return table[name]
    if ":" not in name:
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownHeuristic(f"unknown {kind} heuristic {name!r}{hint}; choose from "
                               f"{', '.join(table)}, or give module:function / file.py:function")
    fn = _load_object(name)
    if kind == "input":
        return _as_input_chooser(fn)
    layers = {"relu": relu_split, "activation": activation_split}
    return _as_layer_chooser(fn, layers[kind], kind) if kind in layers else fn


def _as_input_chooser(fn):
    def chooser(batch):
        out = fn(batch)
        if isinstance(out, torch.Tensor) and out.dim() == 2:
            return input_split.choose_by_scores(batch, out)
        return _checked(out, batch.n, "input")
    return chooser


def _as_layer_chooser(fn, module, kind):
    """A user's ``relu`` or ``activation`` heuristic: per-layer scores (a list) are chosen from as ``module``'s
    built-in scoring rules are; a choice is checked."""
    def chooser(batch):
        out = fn(batch)
        if isinstance(out, (list, tuple)):
            return module.choose_by_scores(batch, list(out))
        return _checked(out, batch.n, kind)
    return chooser


def _checked(out, n, kind):
    if not isinstance(out, torch.Tensor) or out.shape != (n,):
        raise UnknownHeuristic(f"a {kind} heuristic must return scores or a ({n},) tensor of choices, "
                               f"got {type(out).__name__} {getattr(out, 'shape', '')}")
    return out.long()
