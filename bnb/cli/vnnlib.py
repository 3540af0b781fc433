"""``bnb-vnnlib``: the solver command line of the VNN-LIB 2.0 standard (chapter 5).

    bnb-vnnlib --name | --version
    bnb-vnnlib supports --CAPABILITY          (one of the eleven of section 5.4)
    bnb-vnnlib verify QUERY --network NAME=FILE [--timeout S] [--serialise-assignments DIR]
                      [--config FILE.yaml ...] [--set section.key=value ...] [-v]    (the last three: bnb's own)

``verify`` prints one line, ``sat``, ``unsat``, ``unknown`` or ``timed-out``, and after ``sat`` the satisfying
assignment (the counterexample input, replayed on the ONNX model, and the output the model computes for it) in
the command-line format of section 5.3.1 (``NAME TYPE [dims]``, then the values row-major, one a line), or, with
``--serialise-assignments DIR``, in its serialised format instead: one ONNX TensorProto file ``DIR/NAME.pb`` per
declared variable, of its shape and element type (``real`` as float64), each written atomically; nothing is
written for any other answer. Exit code 0 with an answer; 2 for bad input or usage (one line on stderr, nothing
on stdout); 1 for an internal error. ``supports`` answers only what bnb really supports (:mod:`bnb.io.vnnlib2`).
Nothing here imports torch before a query is verified (``supports --onnx-operators`` excepted: it reads the
loader's operator list).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from bnb.errors import BnbError
from bnb.results import EXIT_BAD_INPUT, Verdict, write_atomic

NAME = "bnb (a complete branch-and-bound verifier for ReLU networks)"
PROG = "bnb-vnnlib"
ONNX_OPSETS = ("8", "18")  # the range the tests load (tests/test_vnnlib2.py); every load is checked by onnxruntime
ANSWERS = {Verdict.SAT: "sat", Verdict.UNSAT: "unsat", Verdict.UNKNOWN: "unknown", Verdict.TIMEOUT: "timed-out"}

# capability flag -> its answer (lines); --onnx-operators is read from the loader when asked
_LISTS = {
    "--vnnlib-versions": lambda: _v2().VNNLIB_VERSIONS,
    "--onnx-opset-versions": lambda: ONNX_OPSETS,
    "--onnx-element-types": lambda: _v2().ELEMENT_TYPES,
    "--onnx-operators": lambda: _operators(),
    "--hidden-node-theories": lambda: _v2().THEORIES["hidden-node"],
    "--multiple-input-output-theories": lambda: _v2().THEORIES["multiple-input-output"],
    "--multiple-network-theories": lambda: _v2().THEORIES["multiple-network"],
    "--multiple-node-comparison-theories": lambda: _v2().THEORIES["multiple-node-comparison"],
    "--arithmetic-complexity-theories": lambda: _v2().THEORIES["arithmetic-complexity"],
}
_BOOLEANS = {
    "--optimised-disjunctive-reasoning": False,  # the assertions are brought to disjunctive normal form
    "--serialise-assignments": True,             # verify --serialise-assignments DIR writes DIR/NAME.pb
    "--unsat-proofs": False,                     # no proof format is produced
}
_ALIASES = {"--multiple-inputs-output-theories": "--multiple-input-output-theories"}  # as section 5.4 spells it


def _v2():
    import bnb.io.vnnlib2
    return bnb.io.vnnlib2


def _operators():
    from bnb.io.onnx_ops import OPERATORS
    return tuple(OPERATORS)


def _fail(e) -> None:
    click.echo(f"{PROG}: error: {e}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--name", "show_name", is_flag=True, help="Print the verifier's full name.")
@click.option("--version", "show_version", is_flag=True, help="Print bnb's version.")
@click.pass_context
def main(ctx, show_name, show_version):
    """The VNN-LIB 2.0 solver interface of bnb (standard, chapter 5): verify a query, report capabilities."""
    if show_name and show_version:
        raise click.UsageError("--name and --version are given one at a time")
    if (show_name or show_version) and ctx.invoked_subcommand is not None:
        raise click.UsageError(f"--name and --version are global options, not combined with {ctx.invoked_subcommand}")
    if show_name:
        click.echo(NAME)
        ctx.exit(0)
    if show_version:
        from bnb import __version__
        click.echo(__version__)
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        raise click.UsageError("give --name, --version or a command (verify, supports)")


def _capability_options(f):
    for flag in reversed([*_LISTS, *_BOOLEANS, *_ALIASES]):
        help_text = ("true or false" if flag in _BOOLEANS else
                     f"same as {_ALIASES[flag]}" if flag in _ALIASES else "one value a line")
        f = click.option(flag, "asked", flag_value=flag, multiple=True, help=help_text)(f)
    return f


@main.command()
@_capability_options
def supports(asked):
    """Report one capability (section 5.4): lists one value a line, booleans as true or false."""
    asked = [_ALIASES.get(a, a) for a in asked]
    if len(asked) != 1:
        raise click.UsageError("supports takes exactly one capability flag: " + ", ".join([*_LISTS, *_BOOLEANS]))
    (flag,) = asked
    if flag in _BOOLEANS:
        click.echo("true" if _BOOLEANS[flag] else "false")
    else:
        for value in _LISTS[flag]():
            click.echo(value)


main.add_command(supports, "capabilities")  # section 5.1 names the command so


@main.command(epilog="Exit codes: 0 with an answer (sat, unsat, unknown, timed-out), 2 bad input or usage, "
                     "1 internal error.")
@click.argument("query", type=click.Path(dir_okay=False))
@click.option("--network", "networks", multiple=True, metavar="NAME=FILE",
              help="The ONNX model of the query's network NAME (once per declared network).")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Wall-clock limit in seconds (0: none; default: general.timeout).")
@click.option("--serialise-assignments", "--assignments", "serialise", type=click.Path(), default=None,
              help="Write a sat answer's assignment into this folder (created if missing) as one ONNX TensorProto "
                   "file NAME.pb per declared variable (real as float64), instead of on stdout.")
@click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False),
              help="bnb's YAML configuration file(s), applied in order over the defaults.")
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override one bnb option.")
@click.option("-v", "--verbose", is_flag=True, help="bnb's progress and statistics on stderr.")
def verify(query, networks, timeout, serialise, configs, sets, verbose):
    """Decide the VNN-LIB 2.0 QUERY on the ONNX model given for its network."""
    from bnb.cli.process import end_process, with_watchdog
    from bnb.config import load_config
    try:
        cfg = load_config(configs, sets)
        if timeout is not None:
            cfg.general.timeout = float(timeout)
        q = _v2().read_query(query)
        onnx_path = _network_file(q, networks)
        from bnb.io.models import ModelCache
        from bnb.pipeline.verify import verify as run_verify
        models = ModelCache(1)
        model = models.get(onnx_path)
        _v2().check_model(q, model.onnx_input_shape, model.network.out_size)
        if serialise is not None and os.path.exists(serialise) and not os.path.isdir(serialise):
            raise BnbError(f"--serialise-assignments {serialise}: exists and is not a folder")
        verbose = verbose or cfg.general.verbose
        log = (lambda m: click.echo(f"[bnb] {m}", err=True)) if verbose else None
        result = with_watchdog(cfg.general.timeout, lambda: print("timed-out", flush=True), 0,
                               lambda: run_verify(onnx_path, q.prop, cfg, log=log, models=models))
    except BnbError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo(f"{PROG}: interrupted", err=True)
        sys.exit(130)
    if verbose:
        click.echo(f"[bnb] {result.summary(os.path.basename(query))}", err=True)
    if result.verdict is Verdict.ERROR:
        click.echo(f"{PROG}: error: {result.message}", err=True)
        end_process(1)
    if result.verdict is Verdict.SAT and serialise is not None:
        ce = result.counterexample
        try:
            _write_assignment(serialise, _v2().serialised_assignment(q, ce.x, ce.y))
        except OSError as e:
            _fail(BnbError(f"--serialise-assignments {serialise}: cannot write the assignment: "
                           f"{e.strerror or e}"))
    click.echo(ANSWERS[result.verdict])
    if result.verdict is Verdict.SAT and serialise is None:
        ce = result.counterexample
        click.echo("\n".join(_v2().assignment_lines(q, ce.x, ce.y)))
    end_process(0)


def _write_assignment(folder: str, files) -> None:
    """The serialised assignment ``files`` (``(name, bytes)``) into ``folder``, created if missing; each file
    atomically (a reader never sees a half-written tensor)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, data in files:
        write_atomic(Path(folder) / name, data)


def _network_file(q, networks) -> str:
    """The model file given for the query's one network; refuses missing, unknown or repeated names
    (section 5.3.2, first error condition)."""
    given: dict[str, str] = {}
    for token in networks:
        name, sep, path = token.partition("=")
        if not sep or not name or not path:
            raise BnbError(f"--network takes NAME=FILE, got {token!r}")
        if name in given:
            raise BnbError(f"--network gives network {name!r} more than once")
        given[name] = path
    for name in given:
        if name != q.network:
            raise BnbError(f"--network names {name!r}, which {q.path} does not declare (it declares {q.network!r})")
    if q.network not in given:
        raise BnbError(f"no model file for network {q.network!r} declared in {q.path}: give --network {q.network}=FILE")
    return given[q.network]


if __name__ == "__main__":  # pragma: no cover
    main()
