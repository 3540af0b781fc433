"""End to end on easy real instances, with the shipped benchmark configs: verdicts match expected.csv."""
from __future__ import annotations

import numpy as np
import pytest

from bnb.config import load_config
from bnb.io.onnx_loader import load_onnx
from bnb.io.vnnlib import parse_vnnlib
from bnb.pipeline.verify import verify
from bnb.results import Verdict

from conftest import ROOT, expected_label

CASES = [
    ("acasxu", "onnx/ACASXU_run2a_1_2_batch_2000.onnx", "vnnlib/prop_3.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_2_5_batch_2000.onnx", "vnnlib/prop_3.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_3_3_batch_2000.onnx", "vnnlib/prop_1.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_1_7_batch_2000.onnx", "vnnlib/prop_3.vnnlib"),
    # timed out at 60 s until look-ahead counted both children's unverified margin (now ~1-3 s)
    ("acasxu", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", "vnnlib/prop_5.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", "vnnlib/prop_6.vnnlib"),
    ("mnist_fc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("mnist_fc_2022", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_1_0.03.vnnlib"),
]


@pytest.mark.parametrize("bench_name,onnx,vnnlib", CASES)
def test_easy_instance(bench, bench_name, onnx, vnnlib):
    folder = bench / bench_name
    expected = expected_label(bench_name, onnx.split("/")[-1], vnnlib.split("/")[-1])
    cfg_name = "acasxu" if bench_name == "acasxu" else "mnist_fc"
    cfg = load_config([ROOT / "configs" / f"{cfg_name}.yaml"])
    res = verify(folder / onnx, folder / vnnlib, cfg, timeout=120)
    assert res.verdict.value == expected, res.message
    if res.verdict is Verdict.SAT:
        ce = res.counterexample
        spec = parse_vnnlib(folder / vnnlib).specs[ce.box]
        assert np.all(ce.x >= spec.lower) and np.all(ce.x <= spec.upper)
        y = load_onnx(folder / onnx).run_onnx(ce.x[None].astype(np.float32))
        assert min(float(p.margin(y)[0]) for p in spec.disjuncts) <= 0
    else:
        assert res.stats.get("domains_bounded", 0) >= 1
