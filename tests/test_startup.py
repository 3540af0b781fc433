"""Per-process overhead (issue 14): what a run imports, the ONNX reader without the onnx package, the one-batch
onnxruntime check, reused models, and bounding before the attack. Outcomes, not timings."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bnb.config import Config, load_config
from bnb.engine.attack import _best_samples, stack_polytopes
from bnb.errors import ModelError
from bnb.io.models import ModelCache
from bnb.io.onnx_loader import load_onnx
from bnb.io.onnx_proto import to_array
from bnb.io.vnnlib import parse_vnnlib
from bnb.pipeline import screen
from bnb.pipeline.verify import verify

from conftest import ROOT, acas, expected_label, small_mlp, write_vnnlib

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)

HEAVY = ("cvxpy", "highspy", "matplotlib", "ray", "onnx", "scipy")

_PROBE = """
import json, sys
import bnb.cli.main  # the command line's own imports
from bnb.pipeline.verify import verify
r = verify(sys.argv[1], sys.argv[2])
print(json.dumps({"verdict": r.verdict.value, "loaded": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


@pytest.mark.parametrize("net,prop", [("4_1", "prop_4"), ("2_1", "prop_2")])
def test_verify_imports_no_heavy_module(net, prop):
    onnx_path, spec = acas(net, prop)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _PROBE, str(onnx_path), str(spec)], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["verdict"] == expected_label("acasxu", onnx_path.name, spec.name)
    assert got["loaded"] == [], f"a default ACAS Xu run imported {got['loaded']}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.float16, np.uint8, np.bool_])
def test_tensor_decoding_matches_onnx(dtype):
    a = (np.arange(12).reshape(3, 4) % 3 - 1).astype(dtype)
    raw = numpy_helper.from_array(a, "raw")  # raw_data storage
    assert to_array(raw).dtype == a.dtype
    np.testing.assert_array_equal(to_array(raw), numpy_helper.to_array(raw))
    kind = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    typed = helper.make_tensor("typed", kind, a.shape, a.flatten().tolist())  # typed-field storage
    np.testing.assert_array_equal(to_array(typed), numpy_helper.to_array(typed))


def test_external_data_is_refused():
    t = numpy_helper.from_array(np.ones(3, np.float32), "w")
    t.data_location = TensorProto.EXTERNAL
    with pytest.raises(ValueError, match="external"):
        to_array(t)


def test_corrupted_converted_weight_is_caught(monkeypatch, tmp_path, tiny_net):
    onnx_path = tiny_net(small_mlp(2, 8, 2, seed=3), (2,))
    spec = write_vnnlib(tmp_path / "p.vnnlib", [-1, -1], [1, 1], 2, "(<= Y_0 Y_1)")
    import bnb.io.onnx_loader as loader
    convert = loader.convert_model

    def corrupted(model, path):
        net, *rest = convert(model, path)
        lin = [layer for layer in net.layers if hasattr(layer, "weight")][-1]
        i, j = divmod(int(lin.weight.abs().argmax()), lin.weight.shape[1])
        lin.weight[i, j] = -lin.weight[i, j]  # one weight of the output layer read with the wrong sign
        return (net, *rest)

    assert verify(onnx_path, spec).verdict.value in ("sat", "unsat")  # the faithful conversion passes
    monkeypatch.setattr(loader, "convert_model", corrupted)
    with pytest.raises(ModelError, match="disagrees with onnxruntime"):
        verify(onnx_path, spec)
    with pytest.raises(ModelError, match="disagrees with onnxruntime"):
        load_onnx(onnx_path)


def test_model_cache_reuses_until_the_file_changes(tmp_path):
    onnx_path, spec = acas("4_1", "prop_4")
    copy = tmp_path / onnx_path.name
    copy.write_bytes(onnx_path.read_bytes())
    cache = ModelCache()
    cfg = load_config([ROOT / "configs" / "acasxu.yaml"])
    first = verify(copy, spec, cfg, models=cache)
    second = verify(copy, spec, cfg, models=cache)
    assert first.verdict.value == second.verdict.value == expected_label("acasxu", onnx_path.name, spec.name)
    assert (cache.loads, cache.hits) == (1, 1)
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # the file changed: load it again
    assert verify(copy, spec, cfg, models=cache).verdict is first.verdict
    assert (cache.loads, len(cache)) == (2, 1)


def test_attack_samples_do_not_depend_on_refuted_pairs():
    """Each (box, polytope) pair gets the same starting points whether or not other pairs are attacked."""
    onnx_path, spec = acas("1_9", "prop_7")
    net = load_onnx(onnx_path).network.to(dtype=torch.float32)
    prop = parse_vnnlib(spec, net.in_size, net.out_size)
    polys = [p for s in prop.specs for p in s.disjuncts]
    assert len(polys) >= 2
    C, d = stack_polytopes(polys, net.out_size, torch.float32)
    lo = torch.tensor(np.stack([prop.specs[0].lower] * len(polys)), dtype=torch.float32)
    hi = torch.tensor(np.stack([prop.specs[0].upper] * len(polys)), dtype=torch.float32)
    for samples in (256, 8192):  # several pairs per chunk of random draws, and one
        full = _best_samples(net, lo, hi, C, d, 4, samples, torch.Generator().manual_seed(0))
        active = torch.zeros(len(polys), dtype=torch.bool)
        active[-1] = True
        part = _best_samples(net, lo, hi, C, d, 4, samples, torch.Generator().manual_seed(0), active=active)
        torch.testing.assert_close(part, full[-4:], rtol=0, atol=0)


def test_bound_first_proves_without_attacking():
    onnx_path, spec = acas("4_1", "prop_4")
    assert expected_label("acasxu", onnx_path.name, spec.name) == "unsat"
    r = verify(onnx_path, spec, Config())
    assert r.verdict.value == "unsat" and r.stats["screen_refuted"] == 1 and "time_attack" not in r.stats
    off = Config()
    off.attack.bound_first = 0
    r = verify(onnx_path, spec, off)
    assert r.verdict.value == "unsat" and "time_screen" not in r.stats and "time_attack" in r.stats


def test_remaining_maps_back_to_the_original_pairs():
    onnx_path, spec = acas("1_9", "prop_7")
    prop = parse_vnnlib(spec, 5, 5)
    n = prop.n_disjuncts
    left, box_map, poly_map = screen.remaining(prop, [True] + [False] * (n - 1))
    assert left.n_disjuncts == n - 1 and box_map == [0] and poly_map == [list(range(1, n))]
    assert screen.remaining(prop, [True] * n)[0].specs == []
