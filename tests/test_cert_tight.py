"""Planted class (k) on tight instances (``benchmarks/cert_tight.py`` via ``cert_plants.tight_plants``): bnb proves
a property whose threshold lies just above the best value found, the checker accepts that certificate, and every
weight whose scaling by 1.01 makes the property false at a replayed point gets its certificate rejected."""
from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
import certcheck  # noqa: E402
from benchmarks import cert_plants, cert_tight  # noqa: E402
from benchmarks import fuzz as F  # noqa: E402


def small_suite(tmp_path, seed=8):
    """A results CSV with one dense fuzz network (3-14-16-3; its outputs vary over the box) and a box property."""
    net = F.random_net(np.random.default_rng(seed), "dense")
    F.write_onnx(net, tmp_path / "n.onnx")
    n_in, n_out = int(np.prod(net.in_shape)), net.layers[-1][1].shape[0]
    C = np.zeros((1, n_out))
    C[0, 0] = -1.0  # Y_0 >= 0
    F.write_vnnlib(tmp_path / "p.vnnlib", [(-np.ones(n_in), np.ones(n_in))], [[(C, np.zeros(1))]], n_out)
    (tmp_path / "r.csv").write_text("onnx,vnnlib,verdict\nn.onnx,p.vnnlib,unsat\n")
    return net


@pytest.mark.fast
def test_replay_changes_one_weight(tmp_path):
    """The weight-as-input replay equals onnxruntime on a scaled copy written to disk."""
    small_suite(tmp_path)
    rep = cert_tight.Replay(tmp_path / "n.onnx")
    name = sorted(rep.weights)[-1]  # the output layer's
    k = int(np.argmax(np.abs(rep.weights[name])))
    scaled = cert_tight.Replay(cert_tight.scaled_copy(tmp_path / "n.onnx", name, k, tmp_path / "s.onnx"))
    xs = np.random.default_rng(0).uniform(-1, 1, (20, int(np.prod(rep.shape)))).astype(np.float32)
    for x in xs:
        assert np.array_equal(rep(x, (name, k, cert_tight.FACTOR)), scaled(x))
    assert any(not np.array_equal(rep(x), scaled(x)) for x in xs)


@pytest.mark.fast
def test_tight_weight_plants_are_rejected(tmp_path):
    small_suite(tmp_path)
    a = argparse.Namespace(results=str(tmp_path / "r.csv"), bench=str(tmp_path), tight=2, sites=3,
                           tight_timeout=20.0, config=[str(ROOT / "configs" / "acasxu.yaml")])
    table = Counter()
    bad = cert_plants.tight_plants(a, np.random.default_rng(0), tmp_path, table, certcheck)
    assert bad == 0, table
    assert table[("k tight: clean certificate", "accepted")] >= 2, table
    assert table[("k a weight x 1.01, property false", "rejected")] >= 3, table
    assert table[("k a weight x 1.01, property false", "accepted")] == 0
