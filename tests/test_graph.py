"""Computation graphs (DAGs): every graph op against onnxruntime, bound soundness by sampling and against the
exact MILP on random residual / concatenating / slicing networks, and verdicts end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from test_onnx_loader import make_model

from bnb.config import Config
from bnb.errors import ModelError
from bnb.io.onnx_loader import load_onnx
from bnb.pipeline.verify import verify
from relaxations.ibp import ibp
from relaxations.layers import Stage
from relaxations.methods import bound_rows
from relaxations.milp import milp_bounds
from relaxations.state import DomainState

from conftest import export_onnx, pre_activations, random_points, write_vnnlib

torch.set_num_threads(1)  # tiny tensors: one thread is ~10x faster than two on a busy machine
rng = np.random.default_rng(5)


def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def check_against_onnxruntime(path, n_in, lo=-2.0, hi=2.0, n=64):
    """The converted network equals onnxruntime at random points, and its IBP box contains them."""
    model = load_onnx(path)
    net = model.network
    assert net.in_size == n_in
    x = random_points(np.full(n_in, lo), np.full(n_in, hi), n, seed=1)
    ours = net.forward(torch.from_numpy(x.astype(np.float64))).numpy()
    ref = model.run_onnx(x)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    # IBP on a small box around each of a few points contains onnxruntime's value there
    for k in range(4):
        c = x[k].astype(np.float64)
        l, u = ibp(net, torch.from_numpy(c - 1e-3)[None], torch.from_numpy(c + 1e-3)[None])[:2]
        assert np.all(l.numpy()[0] <= ref[k] + 1e-4) and np.all(ref[k] <= u.numpy()[0] + 1e-4)
    return model


def node(op, ins, outs, **kw):
    return helper.make_node(op, ins, outs if isinstance(outs, list) else [outs], **kw)


# --------------------------------------------------------------------------------- ops against onnxruntime
OP_GRAPHS = {
    # name: (nodes, initialisers, input shape, output shape)
    "residual_add": ([node("Gemm", ["x", "W"], "h", transB=1), node("Relu", ["h"], "a"),
                      node("Add", ["a", "x"], "s"), node("Sub", ["s", "a"], "d"), node("Relu", ["d"], "e"),
                      node("Add", ["e", "s"], "y")], {"W": r(4, 4)}, (1, 4), (1, 4)),
    "concat_axis1_with_constant": ([node("Relu", ["x"], "a"), node("Concat", ["a", "k", "x"], "y", axis=1)],
                                   {"k": r(1, 2)}, (1, 3), (1, 8)),
    "concat_axis2": ([node("Relu", ["x"], "a"), node("Concat", ["x", "a"], "c", axis=2),
                      node("Flatten", ["c"], "y", axis=1)], {}, (1, 2, 3), (1, 12)),
    "slice_steps_negative": ([node("Slice", ["x", "st", "en", "ax", "sp"], "s"), node("Relu", ["s"], "a"),
                              node("Slice", ["x", "st2", "en2"], "t"), node("Concat", ["a", "t"], "c", axis=1),
                              node("Flatten", ["c"], "y")],
                             {"st": np.array([5, 0], np.int64), "en": np.array([-100, 2], np.int64),
                              "ax": np.array([2, 1], np.int64), "sp": np.array([-2, 1], np.int64),
                              "st2": np.array([0, 1, 1], np.int64), "en2": np.array([1, 3, 4], np.int64)},
                             (1, 3, 6), (1, 12)),
    "split_gather": ([node("Split", ["x", "sz"], ["p", "q"], axis=1), node("Relu", ["p"], "a"),
                      node("Gather", ["q", "idx"], "g", axis=1), node("Mul", ["g", "m"], "gm"),
                      node("Concat", ["a", "gm"], "y", axis=1)],
                     {"sz": np.array([2, 3], np.int64), "idx": np.array([2, 0, -1, 2], np.int64), "m": r(4)},
                     (1, 5), (1, 6)),
    "matmul_both_sides": ([node("Reshape", ["x", "shp"], "x3"), node("MatMul", ["x3", "W"], "m"),
                           node("MatMul", ["L", "m"], "lm"), node("Relu", ["lm"], "a"),
                           node("Div", ["a", "dv"], "dd"), node("Flatten", ["dd"], "y")],
                          {"shp": np.array([1, 3, 4], np.int64), "W": r(4, 5), "L": r(2, 3),
                           "dv": np.abs(r(5)) + 0.5}, (1, 12), (1, 10)),
    "gemm_act_as_b_and_transa": ([node("Transpose", ["x"], "xt", perm=[1, 0]),
                                  node("Gemm", ["A", "xt", "c"], "g", transA=1, alpha=0.7, beta=1.3),
                                  node("Relu", ["g"], "a"),
                                  node("Gemm", ["a", "B"], "z", transA=1), node("Flatten", ["z"], "y")],
                                 {"A": r(4, 3), "c": r(3, 1), "B": r(3, 2)}, (1, 4), (1, 2)),
    "transpose_squeeze_unsqueeze": ([node("Transpose", ["x"], "t", perm=[0, 2, 1]),
                                     node("Unsqueeze", ["t", "ax"], "u"), node("Relu", ["u"], "a"),
                                     node("Squeeze", ["a", "ax"], "s"), node("Add", ["s", "t"], "st"),
                                     node("Flatten", ["st"], "y", axis=1)],
                                    {"ax": np.array([1], np.int64)}, (1, 2, 3), (1, 6)),
    "flatten_axis2_identity_dropout_cast": ([node("Flatten", ["x"], "f", axis=2), node("Identity", ["f"], "i"),
                                             node("Dropout", ["i"], "d"), node("Cast", ["d"], "c", to=1),
                                             node("Relu", ["c"], "a"), node("Reshape", ["a", "shp"], "y")],
                                            {"shp": np.array([1, -1], np.int64)}, (1, 2, 2, 3), (1, 12)),
    "conv_bn_avgpool_residual": ([node("Conv", ["x", "K", "kb"], "c", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                                  node("BatchNormalization", ["c", "g", "be", "mu", "va"], "bn"),
                                  node("Relu", ["bn"], "a"), node("Add", ["a", "x"], "s"),
                                  node("AveragePool", ["s"], "p", kernel_shape=[2, 2], strides=[2, 2]),
                                  node("Flatten", ["p"], "y")],
                                 {"K": r(2, 2, 3, 3), "kb": r(2), "g": r(2), "be": r(2), "mu": r(2),
                                  "va": np.abs(r(2)) + 0.1}, (1, 2, 4, 4), (1, 8)),
    "pad_value_and_crop_asymmetric_conv": ([node("Pad", ["x", "pads", "val"], "p"),
                                            node("Conv", ["p", "K"], "c", kernel_shape=[2, 2],
                                                 pads=[0, 1, 1, 0]),
                                            node("Relu", ["c"], "y0"), node("Flatten", ["y0"], "y")],
                                           {"pads": np.array([0, 0, 1, -1, 0, 0, 2, 1], np.int64),
                                            "val": np.array(0.5, np.float32), "K": r(1, 1, 2, 2)},
                                           (1, 1, 3, 3), (1, 30)),
    "conv_transpose": ([node("ConvTranspose", ["x", "K", "kb"], "c", kernel_shape=[3, 3], strides=[2, 2],
                             pads=[1, 1, 1, 1], output_padding=[1, 1]),
                        node("Relu", ["c"], "a"), node("Flatten", ["a"], "y")],
                       {"K": r(2, 3, 3, 3), "kb": r(3)}, (1, 2, 3, 3), (1, 108)),
    "conv1d_avgpool1d": ([node("Conv", ["x", "K", "kb"], "c", kernel_shape=[3], pads=[1, 1], strides=[2]),
                          node("Relu", ["c"], "a"), node("AveragePool", ["a"], "p", kernel_shape=[2]),
                          node("Flatten", ["p"], "y")],
                         {"K": r(3, 2, 3), "kb": r(3)}, (1, 2, 8), (1, 9)),
    "shape_arithmetic": ([node("Shape", ["x"], "sh"), node("Gather", ["sh", "zero"], "b", axis=0),
                          node("Unsqueeze", ["b", "zax"], "bu"), node("Concat", ["bu", "m1"], "tgt", axis=0),
                          node("Reshape", ["x", "tgt"], "f"), node("Relu", ["f"], "a"),
                          node("Sub", ["a", "f"], "y")],
                         {"zero": np.array(0, np.int64), "zax": np.array([0], np.int64),
                          "m1": np.array([-1], np.int64)}, (1, 2, 3), (1, 6)),
}


@pytest.mark.parametrize("name", sorted(OP_GRAPHS))
def test_graph_op_agrees_with_onnxruntime(tmp_path, name):
    nodes, inits, in_shape, out_shape = OP_GRAPHS[name]
    opset = 13
    path = make_model(tmp_path / f"{name}.onnx", nodes, inits, in_shape, out_shape, opset=opset)
    check_against_onnxruntime(path, int(np.prod(in_shape)))


def test_maxpool_and_nonlinear_products_are_refused_by_name(tmp_path):
    nodes = [node("Relu", ["x"], "a"), node("MaxPool", ["a"], "p", kernel_shape=[2, 2]), node("Flatten", ["p"], "y")]
    path = make_model(tmp_path / "mp.onnx", nodes, {}, (1, 1, 4, 4), (1, 4))
    with pytest.raises(ModelError, match="MaxPool") as e:
        load_onnx(path)
    assert str(path) in str(e.value)
    nodes = [node("Relu", ["x"], "a"), node("Mul", ["a", "x"], "y")]
    with pytest.raises(ModelError, match="not linear"):
        load_onnx(make_model(tmp_path / "mul.onnx", nodes, {}, (1, 3), (1, 3)))


def test_chains_keep_their_chain_layers(tmp_path):
    """A sequential model is lowered to the chain of its operators' layers (no Stage layers: the chain's speed):
    a ReLU at the shape of the tensor it acts on, elementwise maps folded into their neighbours, a transpose that
    moves only unit axes a reshape."""
    seq = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    net = load_onnx(export_onnx(seq, (3,), tmp_path / "seq.onnx")).network
    assert not any(isinstance(layer, Stage) for layer in net.layers)
    assert [type(layer).__name__ for layer in net.layers] == ["Linear", "ReLU", "Linear"]
    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, stride=2, padding=1), torch.nn.BatchNorm2d(3).eval(),
                               torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 3 * 3, 2))
    net = load_onnx(export_onnx(conv, (2, 6, 6), tmp_path / "conv.onnx")).network
    assert repr(net.layers) == ("[Conv2d((2, 6, 6) -> (3, 3, 3)), ReLU((3, 3, 3) -> (3, 3, 3)), "
                                "Reshape((3, 3, 3) -> (27,)), Linear((27,) -> (2,))]")
    nodes = [node("Unsqueeze", ["x", "ax"], "u"), node("Transpose", ["u"], "t", perm=[1, 0, 2]),
             node("Squeeze", ["t", "ax"], "s"), node("Relu", ["s"], "y")]
    path = make_model(tmp_path / "t.onnx", nodes, {"ax": np.array([1], np.int64)}, (1, 4), (1, 4))
    assert repr(load_onnx(path).network.layers) == "[ReLU((4,) -> (4,))]"


# ------------------------------------------------------------------------------- random DAG networks (torch)
class Residual(torch.nn.Module):
    """Two residual blocks (one carrying a post-ReLU tensor, one carrying the raw input), a concat and a slice."""

    def __init__(self, n, width, n_out, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.n = n
        self.l1 = torch.nn.Linear(n, width)
        self.l2 = torch.nn.Linear(width, width)
        self.l3 = torch.nn.Linear(width, n)
        self.l4 = torch.nn.Linear(n + width + 2, n_out)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * (1.5 / max(1, p.shape[-1]) ** 0.5)

    def forward(self, x):
        h = torch.relu(self.l1(x))
        h2 = torch.relu(self.l2(h) + h)          # residual on a non-negative tensor
        z = torch.relu(self.l3(h2) + x)          # residual on the input (carried as a +- pair)
        c = torch.cat([z, h2, x[:, :2]], dim=1)  # concat with a slice of the input
        return self.l4(c)


class ConvResidual(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = torch.nn.Conv2d(2, 2, 3, padding=1)
        self.c2 = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(3 * 2 * 2 + 4, 3)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5

    def forward(self, x):
        a = torch.relu(x)
        h = torch.relu(self.c1(a)) + a
        h = torch.relu(self.c2(h))
        left, _ = torch.split(h, [2, 1], dim=1)
        return self.fc(torch.cat([h.flatten(1), left[:, :, 0].flatten(1)], dim=1))


def dag_models(tmp_path):
    out = []
    for seed in range(3):
        n, width, n_out = 3 + seed, 5 + seed, 2 + seed % 2
        out.append((export_onnx(Residual(n, width, n_out, seed), (n,), tmp_path / f"res{seed}.onnx", True), n))
    out.append((export_onnx(ConvResidual(7), (2, 4, 4), tmp_path / "convres.onnx", True), 32))
    return out


METHODS = ("ibp", "crown", "dp0", "alpha", "beta", "mn-crown")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bounds_contain_sampled_outputs_on_dag_networks(tmp_path, dtype):
    """Every method's output bounds contain onnxruntime's outputs at 4000 sampled points (within its float32
    rounding), and its intermediate bounds (``pre_bounds``, per ReLU layer of the lowered chain: the whole state of
    live tensors) contain the pre-activations of the float64 converted network at the same points, up to the
    rounding of that float64 evaluation (``1e-12 (1 + max |z|)``; the bounds are rigorous in real arithmetic)."""
    for path, n in dag_models(tmp_path):
        model = check_against_onnxruntime(path, n, -1.0, 1.0)
        net = model.network.to(dtype=dtype)
        assert any(isinstance(layer, Stage) for layer in net.layers)
        g = np.random.default_rng(n)
        c = g.uniform(-1, 1, n)
        w = g.uniform(0.05, 0.6, n)
        box = (c - w).astype(np.float32), (c + w).astype(np.float32)  # the same box in both dtypes
        lo, hi = (torch.tensor(b, dtype=dtype)[None] for b in box)
        x = random_points(*box, 4000, seed=2)  # float32 points, inside the box
        y = model.run_onnx(x)  # onnxruntime's outputs, the reference
        zs = pre_activations(model.network.to(dtype=torch.float64), torch.from_numpy(x).double())
        C = torch.eye(net.out_size, dtype=dtype)
        unstable = 0
        for method in METHODS if dtype == torch.float32 else ("ibp", "crown", "alpha"):  # (keeps the suite fast)
            res = bound_rows(net, DomainState(lo, hi), C, method, iters=10, want_upper=True)
            lb, ub = res.lb.double().numpy()[0], res.ub.double().numpy()[0]
            tol = 1e-4 * (1 + np.abs(y).max())
            assert np.all(lb <= y.min(0) + tol), (path.name, method, lb, y.min(0))
            assert np.all(ub >= y.max(0) - tol), (path.name, method, ub, y.max(0))
            assert len(res.pre_bounds) == len(zs) == len(net.relu_indices()), (path.name, method)
            for j, (z, (l, u)) in enumerate(zip(zs, res.pre_bounds)):
                ztol = 1e-12 * (1 + float(z.abs().max()))
                assert torch.all(l[0].double() <= z.min(0).values + ztol), (path.name, method, "ReLU layer", j)
                assert torch.all(u[0].double() >= z.max(0).values - ztol), (path.name, method, "ReLU layer", j)
                unstable += int(((l < 0) & (u > 0)).sum())
        assert unstable > 0, path.name  # relaxed neurons: the intermediate bounds matter


def test_crown_bounds_below_the_exact_milp_optimum(tmp_path):
    """On the lowered graph, every method's lower bound (single-neuron and LP) is at most the exact MILP minimum,
    which itself is at most every sampled output; alpha-CROWN is at least as tight as IBP there."""
    for path, n in dag_models(tmp_path)[:2]:
        model = load_onnx(path)
        net = model.network
        lo, hi = -0.5 * np.ones(n), 0.5 * np.ones(n)
        e_lb, e_ub = milp_bounds(net, lo, hi)
        y = model.run_onnx(random_points(lo, hi, 3000, seed=3))
        assert np.all(e_lb <= y.min(0) + 1e-5) and np.all(e_ub >= y.max(0) - 1e-5)
        state = DomainState(torch.from_numpy(lo)[None], torch.from_numpy(hi)[None])
        C = torch.eye(net.out_size, dtype=torch.float64)
        got = {}
        for method in ("ibp", "crown", "alpha", "lp"):  # lp: the triangle LP over the Stages' dense maps
            lb = bound_rows(net, state, C, method, iters=30).lb.numpy()[0]
            assert np.all(lb <= e_lb + 1e-6), (method, lb, e_lb)
            got[method] = lb
        assert np.sum(got["alpha"]) >= np.sum(got["ibp"]) - 1e-9


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("branching", ["relu", "input"])
def test_residual_and_concat_networks_verified_end_to_end(tmp_path, branching):
    """Thresholds just above and below the exact MILP minimum of output 0: ``sat`` (with a witness replayed on
    onnxruntime) and ``unsat``, through the whole pipeline."""
    cfg = Config()
    cfg.bab.branching = branching
    cfg.general.threads = 1
    for path, n in dag_models(tmp_path)[:1]:  # residual blocks and a concat with a slice, in one network
        model = load_onnx(path)
        lo, hi = -0.4 * np.ones(n), 0.4 * np.ones(n)
        C = np.zeros((1, model.network.out_size))
        C[0, 0] = 1.0
        v = float(milp_bounds(model.network, lo, hi, C)[0][0])
        margin = 1e-3 * (1 + abs(v))
        for label, thr in (("unsat", v - margin), ("sat", v + margin)):
            spec = write_vnnlib(tmp_path / f"{path.stem}_{label}.vnnlib", lo, hi, model.network.out_size,
                                f"(<= Y_0 {thr!r})")
            res = verify(path, spec, cfg, timeout=60)
            assert res.verdict.value == label, (path.name, branching, label, res)


# ------------------------------------------------------------------------------------ convolutions at speed
def test_rows_in_chunks_give_the_same_bounds(tmp_path, monkeypatch):
    """CROWN's intermediate rows bounded in memory-sized chunks: the same bounds as all at once."""
    import relaxations.crown as crown_mod
    seq = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv1d(4, 4, 3),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 10, 3))
    net = load_onnx(export_onnx(seq, (2, 12), tmp_path / "c1d.onnx")).network
    g = np.random.default_rng(0)
    c = g.normal(0, 1, net.in_size)
    state = DomainState(torch.from_numpy(c - 0.3)[None].repeat(3, 1), torch.from_numpy(c + 0.3)[None].repeat(3, 1))
    C = torch.eye(3, dtype=torch.float64)
    whole = bound_rows(net, state, C, "crown")
    monkeypatch.setattr(crown_mod, "ROW_BUDGET_BYTES", 1)  # one neuron per chunk
    chunked = bound_rows(net, state, C, "crown")
    # the same bounds up to the order of floating-point sums (BLAS blocks a row chunk differently from the whole
    # matrix on some CPUs); each is rigorous on its own
    close = lambda a, b: torch.allclose(a, b, rtol=1e-12, atol=1e-12)  # noqa: E731
    assert close(whole.lb, chunked.lb), (whole.lb - chunked.lb).abs().max()
    for (l0, u0), (l1, u1) in zip(whole.pre_bounds, chunked.pre_bounds):
        assert close(l0, l1) and close(u0, u1)


def test_alpha_optimises_intermediate_slopes_of_unstable_neurons_only(tmp_path):
    path, n = dag_models(tmp_path)[3]  # the convolutional residual network
    net = load_onnx(path).network
    state = DomainState(-0.5 * torch.ones(1, n, dtype=torch.float64), 0.5 * torch.ones(1, n, dtype=torch.float64))
    C = torch.eye(net.out_size, dtype=torch.float64)
    cr = bound_rows(net, state, C, "crown")
    al = bound_rows(net, state, C, "alpha", iters=5)
    for j, (l, u) in enumerate(cr.pre_bounds):
        k = int(((l < 0) & (u > 0)).sum())
        if j == 0 or k == 0:
            assert j not in al.alphas
        else:
            assert all(a.shape[:2] == (1, 2 * k) for a in al.alphas[j])
    assert torch.all(al.lb >= cr.lb - 1e-9)
