"""``bnb serve`` / ``bnb query`` end to end: a real server process, two queries checked against expected.csv,
bad input answered as such, and a clean shutdown."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
from test_verify import check_witness

from conftest import ROOT, acas, expected_label

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)


def _cli(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "bnb.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def test_serve_answers_queries_and_shuts_down(tmp_path):
    sock = tmp_path / "bnb.sock"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = subprocess.Popen([sys.executable, "-m", "bnb.cli", "serve", "--socket", str(sock), "--config",
                               str(ROOT / "configs" / "acasxu.yaml")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not sock.exists():
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() - t0 < 120, "the server did not start"
            time.sleep(0.1)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # only this user may connect
        for net, prop, code in [("4_1", "prop_4", 0), ("2_1", "prop_2", 10)]:
            onnx_path, spec = acas(net, prop)
            expected = expected_label("acasxu", onnx_path.name, spec.name)
            out = tmp_path / f"{net}_{prop}.txt"
            p = _cli("query", "--socket", sock, onnx_path, spec, "--results-file", out, "--timeout", 60)
            assert p.returncode == code, p.stdout + p.stderr
            assert f": {expected} in " in p.stdout
            assert out.read_text().split("\n", 1)[0] == expected
            if expected == "sat":
                check_witness(onnx_path, spec, out.read_text())
        p = _cli("query", "--socket", sock, tmp_path / "missing.onnx", spec)
        assert p.returncode == 2 and "missing.onnx: no such file" in p.stderr and "Traceback" not in p.stderr
        assert _cli("query", "--socket", sock, "--shutdown").returncode == 0
        assert server.wait(60) == 0
        assert not sock.exists()
        assert "stopped after 3 queries" in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_query_without_server_is_one_line(tmp_path):
    onnx_path, spec = acas("4_1", "prop_4")
    p = _cli("query", "--socket", tmp_path / "none.sock", onnx_path, spec, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("bnb: error: ") and len(p.stderr.strip().splitlines()) == 1
