"""The ``bnb`` command line."""
from __future__ import annotations

import json
import os
import sys
import time

import click

from bnb.cli.process import WATCHDOG_GRACE, end_process, with_watchdog
from bnb.config import load_config, render_yaml
from bnb.errors import BnbError
from bnb.results import EXIT_BAD_INPUT, EXIT_CODES, Verdict, write_atomic
from relaxations.names import METHODS

_EXIT_HELP = ("Exit codes: 0 unsat (property holds), 10 sat (counterexample found), 20 unknown, "
              "30 timeout, 1 internal error, 2 bad input (unreadable or unsupported file, bad option).")


def _fail(e: BaseException) -> None:
    click.echo(f"bnb: error: {e}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _config(configs, sets, timeout=None, proof_only=False):
    cfg = load_config(configs, list(sets) + (["general.proof_only=true"] if proof_only else []))
    if timeout is not None:
        cfg.general.timeout = float(timeout)
    return cfg


config_option = click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False),
                             help="YAML configuration file(s), applied in order over the defaults.")
proof_only_option = click.option(
    "--proof-only", is_flag=True,
    help="Turn off every falsification (general.proof_only): answers are unsat, unknown, timeout or error, never "
         "sat, so an unsat on a violated property shows an unsound bound. For soundness testing.")
set_option = click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
                          help="Override one option (applied after --config); repeatable.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bnb-verifier")
def main():
    """bnb: a complete branch-and-bound verifier for ReLU networks (ONNX + VNN-LIB).

    Verdicts: unsat (the property holds, proven), sat (violated, with a counterexample replayed on the
    ONNX model), timeout, unknown, error.
    """


@main.command(epilog=_EXIT_HELP)
@click.argument("network", type=click.Path(dir_okay=False))
@click.argument("spec", type=click.Path(dir_okay=False))
@config_option
@set_option
@click.option("--timeout", type=float, default=None, help="Wall-clock limit in seconds (overrides general.timeout).")
@click.option("--results-file", type=click.Path(dir_okay=False), default=None,
              help="Write a VNN-COMP results file (verdict, and the witness for sat).")
@click.option("-v", "--verbose", is_flag=True, help="Progress and statistics on stderr.")
@proof_only_option
@click.option("--certificate", type=click.Path(dir_okay=False), default=None,
              help="On unsat, write the proof to this file (.npz, docs/certificates.md), checkable with `bnb check`; "
                   "configurations the format cannot hold say 'certificate: unsupported (<reason>)' and write nothing.")
def verify(network, spec, configs, sets, timeout, results_file, verbose, proof_only, certificate):
    """Verify the property SPEC (VNN-LIB) on the network NETWORK (ONNX)."""
    from bnb.pipeline.verify import verify as run_verify
    from bnb.timing import process_age
    t_startup = process_age()
    try:
        cfg = _config(configs, sets, timeout, proof_only)
        verbose = verbose or cfg.general.verbose
        log = (lambda m: click.echo(f"[bnb] {m}", err=True)) if verbose else None
        limit = cfg.general.timeout
        result = with_watchdog(limit, _announce_timeout(limit, network, spec, results_file),
                               EXIT_CODES[Verdict.TIMEOUT],
                               lambda: run_verify(network, spec, cfg, log=log, certificate=certificate))
    except BnbError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo("bnb: interrupted", err=True)
        sys.exit(130)
    t0 = time.monotonic()
    if results_file and result.verdict is not Verdict.ERROR:
        write_atomic(results_file, result.to_vnncomp())
    result.stats["time_write"] = time.monotonic() - t0
    result.stats["time_startup"] = t_startup
    name = f"{os.path.basename(network)} / {os.path.basename(spec)}"
    click.echo(result.summary(name))
    if verbose and result.stats:
        click.echo("[bnb] stats: " + ", ".join(f"{k}={_fmt(v)}" for k, v in result.stats.items()), err=True)
    if result.verdict is Verdict.ERROR:
        click.echo(f"bnb: error: {result.message}", err=True)
    end_process(EXIT_CODES[result.verdict])


@main.command()
@click.argument("certificate", type=click.Path(dir_okay=False))
@click.argument("network", type=click.Path(dir_okay=False))
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--exact", is_flag=True, help="Redo every computation in exact rational arithmetic (python-flint's if "
              "installed: mnist_fc size; else fractions, small networks only).")
def check(certificate, network, spec, exact):
    """Check an unsat CERTIFICATE of SPEC on NETWORK with the independent checker (`python -m certcheck`, which
    imports neither torch nor bnb). Prints accepted, rejected: <reason> or unsupported: <reason>; exit 0, 1 or 2."""
    import subprocess
    cmd = [sys.executable, "-m", "certcheck", certificate, network, spec] + (["--exact"] if exact else [])
    sys.exit(subprocess.call(cmd))


def _announce_timeout(limit, network, spec, results_file):
    """What ``bnb verify`` says when its watchdog ends a run still going ``WATCHDOG_GRACE`` seconds after the
    limit (the backstop of the cooperative deadline): ``timeout``, on stdout and in the results file."""
    def announce():
        if results_file:
            write_atomic(results_file, "timeout\n")
        print(f"{os.path.basename(network)} / {os.path.basename(spec)}: timeout in {limit + WATCHDOG_GRACE:.2f}s "
              f"(limit {limit:g}s reached; the run did not stop, ended by the watchdog)", flush=True)
    return announce


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@main.command()
@click.argument("network", type=click.Path(dir_okay=False))
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--method", "-m", default="ibp", show_default=True,
              help="Bounding method: " + ", ".join(METHODS) + ".")
@click.option("--json", "as_json", is_flag=True, help='Print {"lower": [...], "upper": [...]} (a list per box).')
@config_option
@set_option
def bounds(network, spec, method, as_json, configs, sets):
    """Lower and upper bounds of every network output over the input box(es) of SPEC."""
    from bnb.pipeline.bounds import output_bounds
    try:
        cfg = _config(configs, sets)
        per_box = output_bounds(network, spec, method, cfg)
    except BnbError as e:
        _fail(e)
    if as_json:
        if len(per_box) == 1:
            lo, hi = per_box[0]
            click.echo(json.dumps({"lower": lo, "upper": hi}))
        else:
            click.echo(json.dumps({"lower": [b[0] for b in per_box], "upper": [b[1] for b in per_box]}))
        return
    for b, (lo, hi) in enumerate(per_box):
        if len(per_box) > 1:
            click.echo(f"box {b}:")
        for j, (l, u) in enumerate(zip(lo, hi)):
            click.echo(f"  Y_{j}: [{l: .6g}, {u: .6g}]")


@main.command("run", epilog="Exit code 0 when no verdict contradicts expected.csv, 1 otherwise, 2 on bad input.")
@click.argument("instances", type=click.Path(dir_okay=False))
@config_option
@set_option
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="CSV of results, one row written as soon as each instance finishes.")
@click.option("--timeout", type=float, default=None, help="Override every instance's timeout (seconds).")
@click.option("--limit", type=int, default=None, help="Only the first N instances.")
@click.option("--select", default=None, help="Only instances whose 'onnx,vnnlib' contains this text.")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Instances run at a time, each in a worker process that is killed and replaced when it "
                   "overruns or dies (0: in this process, no isolation; for debugging).")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds past an instance's timeout before its worker is killed (row: timeout).")
@click.option("--memory-limit", "memory_mb", type=click.FloatRange(min=0), default=None,
              help="Cap each worker's address space at this many MiB (RLIMIT_AS, after the warm-up imports, "
                   "which take ~1 GiB); running out of memory is an error row, the suite goes on.")
@click.option("--resume", is_flag=True,
              help="Keep the complete rows already in --out and run only the missing instances.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Spread the instances over the Ray cluster at ADDRESS (host:port, or 'auto'), --workers at a "
                   "time, with the same per-instance limits (pip install 'bnb-verifier[ray]').")
@proof_only_option
@click.option("--certificates", type=click.Path(file_okay=False), default=None,
              help="Write each unsat answer's proof into this folder (<onnx>__<vnnlib>.npz; see verify --certificate).")
def run_cmd(instances, configs, sets, out, timeout, limit, select, workers, grace, memory_mb, resume, ray_address,
            proof_only, certificates):
    """Run a VNN-COMP INSTANCES.csv suite (onnx,vnnlib,timeout rows) and print a summary table.

    Verdicts are compared with an expected.csv beside the instances file when there is one.
    """
    from pathlib import Path

    from bnb.runs.suite import run_suite, summary_table
    if resume and not out:
        _fail(BnbError("--resume needs --out (the results file to continue)"))
    try:
        cfg = _config(configs, sets, proof_only=proof_only)
        results = run_suite(Path(instances), cfg, Path(out) if out else None, click.echo, timeout, limit, select,
                            workers=workers, grace=grace, memory_mb=memory_mb or None, resume=resume,
                            ray_address=ray_address, certificates=Path(certificates) if certificates else None)
    except BnbError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo("bnb: interrupted (the rows written so far are complete; continue with --resume)", err=True)
        sys.exit(130)
    except RuntimeError as e:  # a worker process that cannot start: the environment, not one instance
        click.echo(f"bnb: error: {e}", err=True)
        sys.exit(1)
    click.echo(summary_table(results))
    sys.exit(1 if any(r["wrong"] for r in results) else 0)


@main.command(epilog="Writes DIR/results.csv, DIR/summary.md, DIR/cactus.png, DIR/branches_*.png and DIR/runs/ "
                     "(one resumable results file per heuristic). Exit code 1 if any verdict is wrong.")
@click.argument("instances", type=click.Path(dir_okay=False))
@click.option("--heuristics", "heuristics", required=True, metavar="H1,H2,...",
              help="Branching heuristics to compare (built-in names, e.g. babsr,deepsplit or gap-gain,interval for "
                   "activation splitting; input=module:function / relu=file.py:function / "
                   "activation=module:function for plug-ins).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the study's files.")
@config_option
@set_option
@click.option("--timeout", type=float, default=None, help="Override every instance's timeout (seconds).")
@click.option("--limit", type=int, default=None, help="Only the first N instances.")
@click.option("--select", default=None, help="Only instances whose 'onnx,vnnlib' contains this text.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Only every k-th instance (after --select, before --limit): a sample across properties.")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Instances run at a time, each in its own worker process (0: in this process).")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds past an instance's timeout before its worker is killed.")
@click.option("--memory-limit", "memory_mb", type=click.FloatRange(min=0), default=None,
              help="Cap each worker's address space at this many MiB.")
@click.option("--resume", is_flag=True, help="Continue a killed study in --out: finished rows are kept.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS", help="Run on the Ray cluster at ADDRESS.")
@click.option("--baseline", default=None,
              help="Heuristic the branch scatter plots compare against (default: the first).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def study(instances, heuristics, out, configs, sets, timeout, limit, select, every, workers, grace, memory_mb,
          resume, ray_address, baseline, no_progress):
    """Run every instance of INSTANCES.csv under every heuristic, otherwise identical settings; write
    the results, a summary and the cactus plot."""
    from pathlib import Path

    from bnb.runs.study import run_study, summarize
    try:
        cfg = _config(configs, sets)
        results = run_study(Path(instances), heuristics, cfg, Path(out), click.echo, timeout, limit, select,
                            workers=workers, grace=grace, memory_mb=memory_mb or None, resume=resume,
                            ray_address=ray_address, baseline=baseline, progress=not no_progress, every=every)
    except BnbError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo("bnb: interrupted (the rows written so far are complete; continue with --resume)", err=True)
        sys.exit(130)
    except RuntimeError as e:
        click.echo(f"bnb: error: {e}", err=True)
        sys.exit(1)
    labels = list(dict.fromkeys(r["heuristic"] for r in results))
    for r in summarize(results, labels):
        click.echo(f"{r['heuristic']}: {r['solved']}/{r['instances']} solved, {r['wrong']} wrong, "
                   f"total {r['total_s']:.1f}s")
    click.echo(f"wrote {Path(out) / 'summary.md'}")
    sys.exit(1 if any(r["wrong"] for r in results) else 0)


@main.command(epilog="Security: local only. The socket is created with mode 0600, so only your user can connect; "
                     "requests name files to read and declared options, nothing is executed (see bnb/runs/serve.py).")
@click.option("--socket", "sock", required=True, type=click.Path(dir_okay=False),
              help="Path of the UNIX socket to listen on (created; removed on exit).")
@config_option
@set_option
def serve(sock, configs, sets):
    """Keep a process warm and verify the queries of `bnb query` one after another.

    Imports are paid once and each network is loaded once while its file is unchanged (every property is
    still checked against onnxruntime in its own boxes). Stops on `bnb query --shutdown`, SIGTERM or Ctrl-C
    (after the query in progress).
    """
    from bnb.runs.serve import serve as run_server
    try:
        cfg = _config(configs, sets)
        run_server(sock, cfg, lambda m: click.echo(m, err=True))
    except BnbError as e:
        _fail(e)


@main.command(epilog=_EXIT_HELP)
@click.argument("network", required=False, type=click.Path(dir_okay=False))
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--socket", "sock", required=True, type=click.Path(dir_okay=False),
              help="The socket of a running `bnb serve`.")
@set_option
@click.option("--timeout", type=float, default=None, help="Wall-clock limit in seconds (default: the server's).")
@click.option("--results-file", type=click.Path(dir_okay=False), default=None,
              help="Write a VNN-COMP results file (verdict, and the witness for sat).")
@click.option("--shutdown", is_flag=True, help="Ask the server to stop (instead of a query).")
def query(network, spec, sock, sets, timeout, results_file, shutdown):
    """Verify SPEC on NETWORK in the warm process of `bnb serve --socket`; output and exit code as `bnb verify`."""
    from bnb.runs.serve import query as send
    try:
        if shutdown:
            send(sock, {"op": "shutdown"})
            return
        if not network or not spec:
            raise BnbError("bnb query needs NETWORK and SPEC (or --shutdown)")
        answer = send(sock, {"op": "verify", "onnx": os.path.abspath(network), "vnnlib": os.path.abspath(spec),
                             "timeout": timeout, "set": list(sets)})
    except BnbError as e:
        _fail(e)
    if "error" in answer:
        click.echo(f"bnb: error: {answer['error']}", err=True)
        sys.exit(answer.get("exit_code", EXIT_BAD_INPUT))
    if results_file and answer["verdict"] != Verdict.ERROR.value:
        write_atomic(results_file, answer["results"])
    extra = f" ({answer['message']})" if answer["message"] else ""
    click.echo(f"{os.path.basename(network)} / {os.path.basename(spec)}: {answer['verdict']} in "
               f"{answer['time']:.2f}s{extra}")
    sys.exit(answer["exit_code"])


@main.group()
def config():
    """Inspect the configuration."""


@config.command("show")
@config_option
@set_option
@click.option("--no-help", is_flag=True, help="Values only, without the help comments.")
def config_show(configs, sets, no_help):
    """Print the effective configuration (defaults < --config files < --set overrides)."""
    try:
        cfg = _config(configs, sets)
    except BnbError as e:
        _fail(e)
    click.echo(render_yaml(cfg, with_help=not no_help), nl=False)


# ------------------------------------------------------------------ theory (docs/theory.md; logic in bnb/theory)
def _theory(fn, as_json, *args):
    try:
        res, text = fn(*args)
    except BnbError as e:
        _fail(e)
    click.echo(json.dumps(res) if as_json else text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
box_option = click.option("--box", default=None, metavar="LO:HI,...",
                          help="Input box: one LO:HI per input, or one for all (write --box=-1:1 for negative LO).")


@main.command()
@click.argument("network", type=click.Path(dir_okay=False))
@box_option
@click.option("--samples", type=click.IntRange(min=0), default=20, show_default=True,
              help="Random sub-boxes of the box to measure on, besides the box itself.")
@click.option("--methods", default=None,
              help="Comma-separated subset of the relaxations (default: all that apply to the network).")
@json_option
def precision(network, box, samples, methods, as_json):
    """Gap between each relaxation's output bounds and the exact range (MILP) on a box and its sub-boxes; on
    sigmoid / tanh / softplus / LeakyReLU networks, against a bracket of the range (sandwich MILP .. attained)."""
    from bnb.theory.commands import precision_cmd
    _theory(precision_cmd, as_json, network, box, samples, methods)


@main.command("hull-table")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of the upper envelopes of f(x1 + x2) along x2 = -x1.")
@json_option
def hull_table(plot, as_json):
    """The tight hull of sigmoid/tanh neurons (SSHAPED.md section 1): the table of lower bounds (IBP, CROWN,
    1-D hull LP, multi-input hull LP, exact) and the f(x1 + x2) vertex figure."""
    from bnb.theory.commands import hull_table_cmd
    _theory(hull_table_cmd, as_json, plot)


@main.group()
def recover():
    """The two ways to recover completeness (Mao et al.): partitioning and augmentation."""


@recover.command("partition")
@click.argument("network", type=click.Path(dir_okay=False))
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--method", "-m", default="p1", show_default=True,
              help="Relaxation that must become exact on every piece (lp, mn, p1, anderson, beta, ...).")
@click.option("--max-pieces", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Stop refining at this many pieces.")
@click.option("--count-patterns/--no-count-patterns", default=True, show_default=True,
              help="Enumerate the activation patterns of the network on the box (one LP per neuron and region).")
@json_option
def recover_partition(network, spec, method, max_pieces, count_patterns, as_json):
    """Split the input box of SPEC along ReLU phases until METHOD is exact on every piece; count pieces
    against the activation patterns of the network on the box."""
    from bnb.theory.commands import partition_cmd
    _theory(partition_cmd, as_json, network, spec, method, max_pieces, count_patterns)


@recover.command("augment")
@click.argument("network", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The re-encoded ONNX model.")
@box_option
@json_option
def recover_augment(network, out, box, as_json):
    """Re-encode NETWORK into an equivalent network on which P1 is exact (univariate, convex or concave
    functions), check the equivalence and print the bounds before and after."""
    from bnb.theory.commands import augment_cmd
    _theory(augment_cmd, as_json, network, out, box)


@main.command("relaxation-error")
@click.argument("network", required=False, type=click.Path(dir_okay=False))
@click.option("--center", default=None, help="Centre of the input balls (with NETWORK; default 0).")
@click.option("--radii", default="0.05,0.1,0.2", show_default=True, help="Radii of the l-inf input balls.")
@click.option("--depths", default="1,2,3,4,6", show_default=True, help="Depths of the random networks.")
@click.option("--width", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--inputs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--relax", default=None, help="Relax only these activation layers (comma-separated, from 0).")
@click.option("--lattice", "lattice_flag", is_flag=True,
              help="With NETWORK: every subset of layers relaxed, at the first radius.")
@click.option("--bound", default="crown", show_default=True,
              help="Upper bound of the error: crown, alpha or milp (the sandwich MILP on smooth activations).")
@click.option("--activation", type=click.Choice(["relu", "sigmoid", "tanh", "softplus"]), default="relu",
              show_default=True, help="Activation of the random networks (NETWORK brings its own).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write a PNG plot.")
@json_option
def relaxation_error(network, center, radii, depths, width, inputs, seeds, relax, lattice_flag, bound, activation,
                     plot, as_json):
    """Distance between a network and its linear relaxation over input balls, against depth and radius
    (random networks, or NETWORK)."""
    from bnb.theory.commands import relaxation_error_cmd
    _theory(relaxation_error_cmd, as_json, network, center, radii, depths, width, inputs, seeds, relax,
            lattice_flag, bound, plot, activation)


if __name__ == "__main__":  # pragma: no cover
    main()
