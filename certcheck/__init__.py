"""Independent checker of bnb's unsat certificates (docs/certificates.md): stdlib, numpy, ONNX protobuf only."""


def check(cert_path, onnx_path, vnnlib_path, exact=False, check_hash=True):
    """-> result with status ('accepted' / 'rejected' / 'unsupported'), reason, nodes, leaves, claims, closures,
    seconds. Never raises: a failure of the checker itself is a rejection ('internal error: ...')."""
    from .core import check as run  # numpy is imported here, after `python -m certcheck` limited BLAS threads
    return run(cert_path, onnx_path, vnnlib_path, exact, check_hash)
