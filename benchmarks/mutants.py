"""Mutation score of the soundness tests: small, plausible slips in the bound, split, constraint and verdict code,
and which tests catch each one.

Every mutant is one precise textual edit (file, the exact old text, the new text). For each, the repository's
files (tracked and untracked-but-not-ignored, as ``git ls-files`` lists them) are copied into a temporary
folder, the edit is applied there, and the mutant's relevant tests run in that copy with pytest (the copy is
the working directory and ``PYTHONPATH``, so ``bnb`` and ``relaxations`` are imported from it; the script
checks this). A test that fails (or errors) on the mutant has *caught* it. First the unmutated copy runs the
same tests (the baseline): a test that already fails there would count for nothing, so the script stops.

The edits are checked before anything runs: each old text must occur exactly once in its file, so the table
cannot silently rot when the code changes (``--check`` does only that; ``tests/test_mutants.py`` runs it in the
default suite). Test paths that do not exist (yet) are skipped with a note.

Usage::

    python benchmarks/mutants.py --list
    python benchmarks/mutants.py --check
    python benchmarks/mutants.py [--only NAME[,NAME...]] [--jobs 1] [--timeout 600] [--out table.md]

Exit status: 0 when every mutant run was caught by at least ``MIN_CAUGHT`` (2) tests, 1 when one was caught by
fewer (the issue's "done" condition), 2 when an edit does not apply or the baseline fails. Tests are counted as
test functions: the parameter cases of one function count once.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_CAUGHT = 2


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str     # file, relative to the repository root
    old: str      # exact text, must occur exactly once
    new: str
    what: str     # the slip, in words
    tests: tuple  # pytest arguments: test files or node ids (missing files are skipped)


# Test files whose assertions are ground truth for the bounds (sampled outputs, exact rationals, MILP verdicts).
SOUND = "tests/test_soundness.py"
CROWN = "tests/test_crown.py"
BAB = "tests/test_bab.py"
ACT_SPLIT = "tests/test_activation_split.py"
# test_multineuron.py takes minutes in all: its quicker soundness and MILP-verdict tests
MN = ("tests/test_multineuron.py::test_mn_crown_is_sound_and_not_worse_than_alpha[widths2-2-hull]",
      "tests/test_multineuron.py::test_mn_crown_is_sound_and_not_worse_than_alpha[widths4-2-both]",
      "tests/test_multineuron.py::test_mn_crown_approaches_the_lp_with_the_same_constraints",
      "tests/test_multineuron.py::test_relu_bab_with_constraints_matches_milp",
      "tests/test_multineuron.py::test_constraints_hold_on_sampled_points")
LAYERS = "tests/test_layer_contract.py"
GRAPH = "tests/test_graph.py"
F32 = "tests/test_float32.py"
LP = "tests/test_lp.py"
PROOF = "tests/test_proof_only.py"
# added for this score (issue 25, item 5) and by the other parts of issue 25 (skipped while absent)
VERDICT = "tests/test_proof_decision.py"
LPCERT = "tests/test_lp_certificate.py"
SPLITS = "tests/test_split_masks.py"
STAGE = "tests/test_stage_rounding.py"
F32_MARGIN = "tests/test_float32_margin.py"
ROUNDING = "tests/test_rounding_exact.py"
OPERATORS = "tests/test_operator_bounds.py"
MN_TIGHTEN = "tests/test_mn_tighten.py"  # issue 26, bounds.mn_tighten
CERTS = "tests/test_certificates.py"
SIGNS = "tests/test_signs.py"  # issue 26, bounds.sign_refine
CLAUSES = "tests/test_clauses.py"  # issue 26, bab.clauses

MUTANTS = (
    Mutant("relu_intercept_sign", "relaxations/crown.py",
           "c = torch.bmm(neg, r.up_int[..., None]).squeeze(-1)",
           "c = torch.bmm(neg, -r.up_int[..., None]).squeeze(-1)",
           "back-substitution adds the ReLU upper line's intercept with the wrong sign",
           (SOUND, CROWN, BAB)),
    Mutant("relu_margin_dropped", "relaxations/layers/relu.py",
           "    t = t + 8 * unit_roundoff(l.dtype) * (l.abs() + u.abs()) + tiny(l.dtype)\n", "",
           "the upper ReLU line's intercept is not raised by its rounding margin",
           (SOUND, LAYERS, ROUNDING)),
    Mutant("mn_gamma_p_dropped", "relaxations/crown.py",
           "            bias = bias + G @ cons.p\n", "",
           "multi-neuron constraints gamma . (Pz y + Px z + p) <= 0 enter without their constant gamma . p",
           (*MN, ROUNDING)),
    Mutant("verdict_ge", "relaxations/verdict.py",
           "(values > margin)", "(values >= margin)",
           "a bound equal to the margin counts as a proof (>= for >)",
           (SOUND, VERDICT)),
    Mutant("verdict_nonfinite", "relaxations/verdict.py",
           "ok = torch.isfinite(values) & (values > margin)", "ok = ~torch.isnan(values) & (values > margin)",
           "+inf verifies (only NaN is rejected)",
           (SOUND, VERDICT)),
    Mutant("lp_cert_no_outward_rounding", "relaxations/lp/sound.py",
           "    total -= (n + n_rhs + 4) * EPS * mag * (1 + 4 * EPS) + np.finfo(np.float64).tiny\n", "",
           "the LP dual certificate's float64 sum is not lowered by its rounding bound",
           (LP, LPCERT)),
    Mutant("lp_cert_r_rounding_dropped", "relaxations/lp/sound.py",
           "total = c0 - rhs + t.sum() - slack.sum()", "total = c0 - rhs + t.sum()",
           "the rounding of the reduced costs r = c + A^T lam is not charged in the certificate",
           (LP, LPCERT)),
    Mutant("stage_term_rounding_dropped", "relaxations/layers/stage.py",
           "                w[:, sl] += torch.broadcast_to(wt, (N, *layer.out_shape)).reshape(N, -1)\n", "",
           "a graph stage drops its terms' own rounding weights (keeps only the fan-out sums')",
           (STAGE, GRAPH, LAYERS, ROUNDING, OPERATORS)),
    Mutant("split_mask_ge", "relaxations/layers/relu.py",
           "act, ina = split > 0, split < 0", "act, ina = split >= 0, split < 0",
           "every unsplit neuron (phase 0) is taken as fixed active (>= for >)",
           (SOUND, CROWN, BAB, SPLITS)),
    Mutant("relu_children_off_by_one", "bnb/engine/strategies/relu_split.py",
           "child.fix(torch.cat([ar, ar + m]),", "child.fix(torch.cat([ar, ar + m - 1]),",
           "the inactive phase of a ReLU split is written one child too early",
           (BAB, SPLITS)),
    Mutant("beta_split_sign", "relaxations/crown.py",
           "            Az = Az - beta_term\n", "            Az = Az + beta_term\n",
           "beta-CROWN adds the split constraint s z >= 0 with the wrong sign",
           (CROWN, BAB, SPLITS, ROUNDING)),
    Mutant("infeasible_tol_sign", "relaxations/layers/relu.py",
           "(act & (u < -tol))", "(act & (u < tol))",
           "a fixed-active neuron whose upper bound is a little above 0 makes its domain 'infeasible'",
           (SOUND, BAB, SPLITS)),
    Mutant("ibp_abs_weight", "relaxations/layers/base.py",
           "        yr = self.abs_linear(r)\n        e = self.fp_err",
           "        yr = self.linear(r)\n        e = self.fp_err",
           "IBP's radius goes through W instead of |W| (positive and negative parts mixed up)",
           (LAYERS, CROWN, SOUND, OPERATORS)),
    Mutant("concretize_radius_sign", "relaxations/crown.py",
           "lb = torch.einsum(\"bmn,bn->bm\", A_in, c) - rad + bias",
           "lb = torch.einsum(\"bmn,bn->bm\", A_in, c) + rad + bias",
           "the minimum of a linear bound over the box adds the radius term instead of subtracting it",
           (CROWN, SOUND, BAB)),
    Mutant("input_split_last_part_dropped", "bnb/engine/strategies/input_split.py",
           "    for j in range(parts):\n        c_lo, c_hi", "    for j in range(parts - 1):\n        c_lo, c_hi",
           "input splitting keeps all parts but the last: the children do not cover the parent box",
           (BAB, SPLITS)),
    Mutant("outward_box_lower_up", "relaxations/fp.py",
           "return to_dtype_down(down(_f64(lower)), dtype, device)",
           "return to_dtype_up(down(_f64(lower)), dtype, device)",
           "the box's lower ends are rounded up (inward) to the working dtype",
           (SOUND, F32, VERDICT)),
    Mutant("threshold_down", "relaxations/fp.py",
           "return to_dtype_up(up(_f64(d)), dtype, device)", "return to_dtype_down(up(_f64(d)), dtype, device)",
           "a property's right-hand side d is rounded down to the working dtype",
           (SOUND, VERDICT)),
    Mutant("float32_slack_sign", "bnb/io/spec.py",
           "np.asarray(self.d, np.float64) + self.slack", "np.asarray(self.d, np.float64) - self.slack",
           "a float32 query's evaluation-error slack is subtracted from d instead of added",
           (F32, F32_MARGIN)),
    Mutant("mn_tighten_lower_up", "relaxations/multineuron.py",
           "nl, nu = torch.maximum(l64[0, unstable], lo), torch.minimum(u64[0, unstable], hi)",
           "nl, nu = torch.maximum(l64[0, unstable], lo + 0.01), torch.minimum(u64[0, unstable], hi)",
           "bounds.mn_tighten: a re-bounded neuron's lower bound is overstated by 0.01",
           (MN_TIGHTEN,)),
    Mutant("cert_last_iterate_slopes", "relaxations/optimize.py",
           "lb_alphas=best_alpha if opts.certify else None,\n                       lb_betas=best_beta,",
           "lb_alphas=alphas[\"final\"] if opts.certify else None,\n                       lb_betas=betas,",
           "certificates: the slopes and multipliers recorded are the last iterate's, not those of the bound used",
           (CERTS,)),
    Mutant("cert_parent_claims", "bnb/engine/strategies/input_split.py",
           "        proof.claim(node, pre)\n",
           "        proof.claim(node, [(l.repeat(parts, 1), u.repeat(parts, 1)) for l, u in batch.pre_bounds])\n",
           "certificates: input-split children are recorded with their parent's claims (valid, but not the bounds "
           "their closing rows were built on)",
           (CERTS,)),
    Mutant("sign_proof_skipped", "bnb/engine/signs.py",
           'return verdict == "unsat"', "return True",
           "bounds.sign_refine: a hinted sign is fixed without its proof",
           (SIGNS,)),
    Mutant("clauses_unverified", "bnb/engine/clauses.py",
           'ctx.stats.add("clauses_kept", store.add(cands[ok]))', 'ctx.stats.add("clauses_kept", store.add(cands))',
           "bab.clauses: candidate clauses enter the store without their re-verification",
           (CLAUSES,)),
    Mutant("clauses_unit_phase", "bnb/engine/clauses.py",
           "batch.fix(dom, j, -self.signs[k, j], self.sizes)",
           "batch.fix(dom, j, self.signs[k, j], self.sizes)",
           "bab.clauses: unit propagation fixes the last neuron in the clause's phase (the pruned half) instead of "
           "the other one", (CLAUSES,)),
    Mutant("activation_split_wrong_side", "bnb/engine/strategies/activation_split.py",
           "child.pre_lower[i][d + n, j] = torch.maximum(child.pre_lower[i][d + n, j], p)",
           "child.pre_upper[i][d + n, j] = torch.minimum(child.pre_upper[i][d + n, j], p)",
           "activation splitting: the z >= p child keeps the z <= p side of the split (the other half is lost)",
           (ACT_SPLIT,)),
    Mutant("activation_interval_beta_sign", "relaxations/crown.py",
           "        P = P - bl + bh\n", "        P = P + bl - bh\n",
           "activation splitting, beta children: the interval constraints' multipliers enter z's coefficient with "
           "the wrong sign", (ACT_SPLIT,)),
)

BY_NAME = {m.name: m for m in MUTANTS}
RESULT = re.compile(r"^(tests/\S+?::.+?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def check(root: Path = ROOT, mutants=MUTANTS) -> list[str]:
    """Problems with the edits against the tree at ``root``: an old text not found exactly once, or a
    mutant that changes nothing. Empty when every edit applies."""
    problems = []
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        problems.append("duplicate mutant names")
    for m in mutants:
        f = root / m.path
        if not f.is_file():
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        n = f.read_text().count(m.old)
        if n != 1:
            problems.append(f"{m.name}: the old text occurs {n} times in {m.path} (must be exactly once)")
        if m.old == m.new:
            problems.append(f"{m.name}: the edit changes nothing")
    return problems


def source_files(root: Path = ROOT) -> list[str]:
    """Tracked files and untracked files that git does not ignore (so new, uncommitted tests count too)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return [p for p in out.split("\0") if p and (root / p).is_file()]


def make_copy(dest: Path, root: Path = ROOT) -> Path:
    """The repository's files copied into ``dest/repo``; ``dest/shared`` links to the benchmarks beside the
    repository (``tests/conftest.py`` finds them at ``../shared``). Returns the copy's root."""
    repo = dest / "repo"
    for rel in source_files(root):
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    shared = (root / ".." / "shared").resolve()
    if shared.is_dir():
        (dest / "shared").symlink_to(shared)
    return repo


def apply(m: Mutant, repo: Path) -> None:
    f = repo / m.path
    text = f.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutant {m.name}: the old text occurs {text.count(m.old)} times in {m.path}")
    f.write_text(text.replace(m.old, m.new, 1))


def present(tests, repo: Path) -> tuple[list[str], list[str]]:
    """``(run, missing)``: the pytest arguments whose file exists in ``repo``, and those skipped."""
    run, missing = [], []
    for t in tests:
        (run if (repo / t.split("::")[0]).exists() else missing).append(t)
    return run, missing


def environment(repo: Path) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def imports_from(repo: Path) -> None:
    """Fail unless ``bnb`` and ``relaxations`` import from the copy when run there."""
    code = "import bnb, relaxations; print(bnb.__file__); print(relaxations.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=environment(repo), capture_output=True,
                         text=True, check=True).stdout.split()
    for path in out:
        if not Path(path).resolve().is_relative_to(repo.resolve()):
            raise SystemExit(f"the copy imports {path}, not its own files: the mutants would not be tested")


def run_tests(repo: Path, tests, timeout: float) -> dict:
    """Run pytest on ``tests`` in ``repo``; ``{"outcomes": {node id: outcome}, "timed_out", "seconds", "rc"}``.
    Outcomes are read from the verbose lines as they come, so a run cut by the timeout keeps what it saw."""
    # both tiers: a test moved to the slow tier to keep the default suite short still counts as a catcher
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-o", "console_output_style=classic",
           "--no-header", "-rN", "-m", "slow or not slow", *tests]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=environment(repo), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    outcomes, lines = {}, []
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    for line in (out or "").splitlines():
        lines.append(line)
        hit = RESULT.match(line)
        if hit:
            node, outcome = hit.groups()
            if outcome == "ERROR" or outcomes.get(node) != "FAILED":
                outcomes[node] = outcome
    collect_errors = [ln for ln in lines if ln.startswith("ERROR ") and "::" not in ln]
    return dict(outcomes=outcomes, timed_out=timed_out, seconds=time.perf_counter() - t0, rc=proc.returncode,
                collect_errors=collect_errors, tail="\n".join(lines[-30:]))


def failed(outcomes: dict) -> list[str]:
    return sorted(n for n, o in outcomes.items() if o in ("FAILED", "ERROR", "XPASS"))


def functions(nodes) -> list[str]:
    """The distinct test functions of pytest node ids (parameter cases dropped)."""
    return sorted({n.split("[")[0] for n in nodes})


def run_mutant(m: Mutant, timeout: float, keep: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bnb-mutant-{m.name}-"))
    try:
        repo = make_copy(tmp)
        apply(m, repo)
        tests, missing = present(m.tests, repo)
        res = run_tests(repo, tests, timeout) if tests else dict(outcomes={}, timed_out=False, seconds=0.0, rc=5,
                                                                 collect_errors=[], tail="")
        res.update(mutant=m, run=tests, missing=missing, caught=failed(res["outcomes"]))
        return res
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def baseline(mutants, timeout: float) -> dict:
    """The unmutated copy on the union of the mutants' tests: every one must pass (or skip)."""
    tmp = Path(tempfile.mkdtemp(prefix="bnb-mutant-baseline-"))
    try:
        repo = make_copy(tmp)
        imports_from(repo)
        tests = []
        for m in mutants:
            tests += [t for t in present(m.tests, repo)[0] if t not in tests]
        return run_tests(repo, tests, timeout) | dict(run=tests)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def short(node: str) -> str:
    """``tests/test_x.py::test_y[p]`` -> ``test_x::test_y[p]``."""
    f, _, rest = node.partition("::")
    return f"{Path(f).stem}::{rest}"


def summarise(caught: list[str], limit: int = 6) -> str:
    """Caught test names grouped by test function (parameters counted), at most ``limit`` groups."""
    groups: dict[str, int] = {}
    for n in caught:
        key = short(n).split("[")[0]
        groups[key] = groups.get(key, 0) + 1
    parts = [f"{k} (x{v})" if v > 1 else k for k, v in groups.items()]
    more = f", ... ({len(parts) - limit} more)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def table(results) -> str:
    rows = ["| mutant | where | what | test files run | caught by (functions; cases of all run) "
            "| tests that caught it | time |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["mutant"]
        files = ", ".join(dict.fromkeys(Path(t.split("::")[0]).stem + ("::..." if "::" in t else "")
                                        for t in r["run"]))
        if r["missing"]:
            files += " (absent: " + ", ".join(Path(t).stem for t in r["missing"]) + ")"
        n = len(functions(r["caught"]))
        flag = (f"**{n}**" if n < MIN_CAUGHT else str(n)) + f"; {len(r['caught'])}"
        if r["timed_out"]:
            flag += " (timed out)"
        if r["collect_errors"]:
            flag += " (collection error)"
        what = m.what.replace("|", "\\|")  # a pipe would end the table cell
        rows.append(f"| `{m.name}` | `{m.path}` | {what} | {files} | {flag} of {len(r['outcomes'])} | "
                    f"{summarise(r['caught']) or '-'} | {r['seconds']:.0f} s |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", help="comma-separated mutant names")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true", help="only check that every edit applies exactly once")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at a time (default 1)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per mutant's (and the baseline's) tests")
    ap.add_argument("--out", help="write the markdown table to this file")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline run (not for recorded scores)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies (their paths are printed)")
    args = ap.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            ap.error(f"unknown mutants {unknown}; --list shows them")
        mutants = tuple(BY_NAME[n] for n in names)
    if args.list:
        for m in mutants:
            print(f"{m.name:32s} {m.path:40s} {m.what}\n{'':32s} tests: {' '.join(m.tests)}")
        return 0
    problems = check(ROOT, mutants)
    if problems:
        print("edits that do not apply:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"{len(mutants)} mutants, every edit applies exactly once")
        return 0

    t0 = time.perf_counter()
    if not args.no_baseline:
        base = baseline(mutants, args.timeout)
        bad = failed(base["outcomes"])
        print(f"baseline: {len(base['outcomes'])} tests in {base['seconds']:.0f} s, {len(bad)} failing", flush=True)
        if bad or base["timed_out"] or base["collect_errors"] or not base["outcomes"]:
            print("the unmutated copy does not pass its tests; counts would mean nothing:\n  "
                  + "\n  ".join(bad + base["collect_errors"]) + ("\n  (timed out)" if base["timed_out"] else "")
                  + "\n" + base["tail"], file=sys.stderr)
            return 2
    results = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_mutant, m, args.timeout, args.keep) for m in mutants]
        for fut in futures:
            r = fut.result()
            results.append(r)
            print(f"{r['mutant'].name}: caught by {len(functions(r['caught']))} test functions "
                  f"({len(r['caught'])} of {len(r['outcomes'])} cases) "
                  f"in {r['seconds']:.0f} s" + (" (timed out)" if r["timed_out"] else "")
                  + (f"; absent: {', '.join(r['missing'])}" if r["missing"] else ""), flush=True)
            for n in r["caught"]:
                print(f"    {short(n)}")
    text = table(results)
    print()
    print(text)
    weak = [r["mutant"].name for r in results if len(functions(r["caught"])) < MIN_CAUGHT]
    print(f"\n{len(results)} mutants, {len(results) - len(weak)} caught by >= {MIN_CAUGHT} test functions; "
          f"{time.perf_counter() - t0:.0f} s in all" + (f"; too weak: {', '.join(weak)}" if weak else ""))
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if weak else 0


if __name__ == "__main__":
    sys.exit(main())
