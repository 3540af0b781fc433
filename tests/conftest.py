"""Shared fixtures: the benchmark folder, readers of its CSV files, and a tiny-network factory.

The VNN-COMP benchmarks live next to the repository (``<repo>/../shared/benchmarks``); tests that need
them call :func:`require_bench` (directly or through ``bench``, ``acas``, ``expected_label``, ...), which skips
with one message naming the missing path. With ``BNB_REQUIRE_BENCH=1`` in the environment (``.ci/run`` sets it
when ``../shared/benchmarks`` exists) such a test fails instead, and the session's exit status is non-zero if any
test was skipped for missing benchmark data anyway: a run that has the benchmarks must run their tests.
"""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = (ROOT / ".." / "shared" / "benchmarks").resolve()
BENCHMARKS = ("acasxu", "mnist_fc", "mnist_fc_2022", "oval21", "oval21_2022")


def bench_available() -> bool:
    return BENCH.is_dir() and any((BENCH / b).is_dir() for b in BENCHMARKS)


# every skip for missing benchmark data starts with this; the hooks below count such skips by it
SKIP_PREFIX = "benchmark data not found"
REQUIRE_ENV = "BNB_REQUIRE_BENCH"


def bench_required() -> bool:
    """Whether a missing benchmark must fail the test rather than skip it (``BNB_REQUIRE_BENCH=1``)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def require_bench(*names: str) -> Path:
    """The benchmark folder (or a benchmark inside it); skips the calling test when absent.

    Under ``BNB_REQUIRE_BENCH=1`` the test fails instead (the benchmarks are meant to be there)."""
    path = BENCH.joinpath(*names)
    if not path.exists():
        if not BENCH.is_dir():  # the usual case: one message for every such test
            msg = f"{SKIP_PREFIX}: {BENCH} is missing (the benchmarks are expected in <repo>/../shared/benchmarks)"
        else:
            msg = f"{SKIP_PREFIX}: {path} is missing (in {BENCH})"
        if bench_required():
            pytest.fail(f"{msg}, and {REQUIRE_ENV}=1 says they must be present", pytrace=False)
        pytest.skip(msg)
    return path


# ------------------------------------------------------------------------------ skip accounting
_bench_skips: list[str] = []


def _skip_reason(report) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:  # (file, line, "Skipped: reason")
        return str(lr[2])
    return str(lr)


def pytest_runtest_logreport(report):
    if report.skipped and SKIP_PREFIX in _skip_reason(report):
        _bench_skips.append(report.nodeid)


def pytest_collectreport(report):  # a module-level skip for the same reason
    if report.skipped and SKIP_PREFIX in _skip_reason(report):
        _bench_skips.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if _bench_skips:
        verdict = (f"an error: {REQUIRE_ENV}=1 requires them" if bench_required()
                   else f"set {REQUIRE_ENV}=1 to make this an error")
        terminalreporter.write_line(
            f"{len(_bench_skips)} test(s) skipped because benchmark data was not found under {BENCH} "
            f"({verdict})", red=bench_required(), yellow=not bench_required())


def pytest_sessionfinish(session, exitstatus):
    """Under ``BNB_REQUIRE_BENCH=1`` a skip for missing benchmark data fails the run, however it was raised."""
    if _bench_skips and bench_required() and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def bench() -> Path:
    """``<repo>/../shared/benchmarks``; the test skips when it is missing."""
    return require_bench()


def read_expected(benchmark: str) -> list[dict]:
    """Rows of ``expected.csv`` as dicts with keys onnx, vnnlib, expected, source (paths absolute)."""
    folder = require_bench(benchmark)
    with open(folder / "expected.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["onnx"] = str(folder / r["onnx"])
        r["vnnlib"] = str(folder / r["vnnlib"])
    return rows


def read_instances(benchmark: str) -> list[tuple[str, str, float]]:
    """``instances.csv`` (no header) as ``(onnx path, vnnlib path, timeout)`` with absolute paths."""
    folder = require_bench(benchmark)
    out = []
    with open(folder / "instances.csv", newline="") as f:
        for row in csv.reader(f):
            if row:
                out.append((str(folder / row[0].strip()), str(folder / row[1].strip()), float(row[2])))
    return out


def expected_label(benchmark: str, onnx_name: str, vnnlib_name: str) -> str:
    """The ``expected`` column for one instance, given the file names (without folders)."""
    for r in read_expected(benchmark):
        if Path(r["onnx"]).name == onnx_name and Path(r["vnnlib"]).name == vnnlib_name:
            return r["expected"]
    raise KeyError(f"{benchmark}: no expected label for {onnx_name} / {vnnlib_name}")


def acas(net: str, prop: str) -> tuple[Path, Path]:
    """Paths of an ACAS Xu network (``"2_1"``) and property (``"prop_2"``)."""
    folder = require_bench("acasxu")
    return folder / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx", folder / "vnnlib" / f"{prop}.vnnlib"


# ------------------------------------------------------------------------------ tiny networks
def export_onnx(module: torch.nn.Module, in_shape, path: Path, dynamic_batch: bool = False) -> Path:
    """Export ``module`` (float32) taking inputs of shape ``(1, *in_shape)`` to an ONNX file."""
    module = module.float().eval()
    dummy = torch.zeros((1, *in_shape), dtype=torch.float32)
    kwargs = dict(input_names=["input"], output_names=["output"], opset_version=13)
    if dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no onnxscript
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (dummy,), str(path), dynamo=False, **kwargs)
        except TypeError:  # older torch without the dynamo argument
            torch.onnx.export(module, (dummy,), str(path), **kwargs)
    return path


@pytest.fixture
def tiny_net(tmp_path):
    """Factory: ``tiny_net(nn.Sequential, in_shape, name="net")`` -> path of an ONNX file in tmp_path."""
    def make(module: torch.nn.Module, in_shape=None, name: str = "net", dynamic_batch: bool = False) -> Path:
        if in_shape is None:
            first = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
            in_shape = (first.in_features,)
        return export_onnx(module, tuple(in_shape), tmp_path / f"{name}.onnx", dynamic_batch)
    return make


def torch_mlp(sizes, seed: int = 0) -> torch.nn.Sequential:
    """A seeded ``nn.Sequential`` of Linear layers of the given widths with ReLU between them."""
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def small_mlp(n_in: int = 2, hidden: int = 4, n_out: int = 2, seed: int = 0) -> torch.nn.Sequential:
    return torch_mlp([n_in, hidden, n_out], seed)


def write_vnnlib(path: Path, lower, upper, n_out: int, output_assert: str) -> Path:
    """A VNN-LIB file with the box ``lower <= X <= upper`` and one output assertion (text)."""
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lower))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    lines.append(f"(assert {output_assert})")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_unsat(tmp_path, tiny_net):
    """A tiny network and a property IBP proves: ``(onnx path, vnnlib path)``.

    y_0 = relu(x_0 + x_1) + 1 >= 1 on the box [-1, 1]^2, and the property asks for ``Y_0 <= 0.5``.
    """
    lin1 = torch.nn.Linear(2, 1)
    lin2 = torch.nn.Linear(1, 1)
    with torch.no_grad():
        lin1.weight[:] = torch.tensor([[1.0, 1.0]])
        lin1.bias.zero_()
        lin2.weight[:] = torch.tensor([[1.0]])
        lin2.bias[:] = 1.0
    net = tiny_net(torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2), (2,), name="unsat")
    spec = write_vnnlib(tmp_path / "unsat.vnnlib", [-1, -1], [1, 1], 1, "(<= Y_0 0.5)")
    return net, spec


def random_points(lower, upper, n: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    return (lower + (upper - lower) * rng.random((n, lower.size))).astype(np.float32)


def random_fc(widths, seed):
    """A random fully connected ReLU network (float64) with the given layer widths, e.g. ``[3, 8, 8, 1]``."""

    from relaxations.network import Network
    return Network.from_torch(torch_mlp(widths, seed), (widths[0],))



def random_conv(seed, side, channels, hidden, n_out):
    """A random small convolutional ReLU network on ``(1, side, side)`` inputs: Conv(3 channels, stride 2) ->
    ReLU -> Conv(``channels``) -> ReLU -> Flatten -> Linear(``hidden``) -> ReLU -> Linear(``n_out``)."""
    from relaxations.network import Network
    torch.manual_seed(seed)
    flat = channels * ((side + 1) // 2) ** 2
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, stride=2, padding=1), torch.nn.ReLU(),
                                 torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(flat, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_out))
    return Network.from_torch(module, (1, side, side))

def smooth_net(kind, widths, seed, conv=False):
    """``(module, Network)``: a dense chain (or a small conv net) of ``kind`` activations (sigmoid, tanh, softplus,
    leaky), weights doubled so that pre-activations reach the saturated ends."""
    from relaxations.network import Network
    torch.manual_seed(seed)
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus,
           "leaky": lambda: torch.nn.LeakyReLU(0.1)}[kind]
    if conv:
        mods = [torch.nn.Conv2d(1, 2, 3, stride=2, padding=1), act(), torch.nn.Flatten(), torch.nn.Linear(18, 6), act(),
                torch.nn.Linear(6, 3)]
        in_shape = (1, 5, 5)
    else:
        mods = []
        for a, b in zip(widths[:-1], widths[1:]):
            lin = torch.nn.Linear(a, b)
            with torch.no_grad():
                lin.weight.mul_(2.0)
            mods += [lin, act()]
        mods = mods[:-1]
        in_shape = (widths[0],)
    module = torch.nn.Sequential(*mods)
    return module, Network.from_torch(module, in_shape)


def pre_activations(net, x):
    """Per ReLU layer of ``net`` (a :class:`relaxations.network.Network`) the pre-activations ``(S, n_i)`` of
    the points ``x`` ``(S, n_in)``: what sampled soundness checks of intermediate bounds compare against."""
    out, h = [], x.reshape(-1, *net.in_shape)
    for layer in net.layers:
        if not layer.affine:
            out.append(h.reshape(h.shape[0], -1))
        h = layer.forward(h)
    return out



def pytest_collection_modifyitems(config, items):
    """A slow test is never in the fast tier (``-m fast``), even in a module marked ``fast`` as a whole."""
    if "fast" not in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
