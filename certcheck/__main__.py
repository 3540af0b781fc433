"""python -m certcheck CERT ONNX VNNLIB [--exact] [--no-hash]: one line, exit 0 accepted, 1 rejected, 2 unsupported."""
import os
import sys

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # small products: threads only contend
    os.environ.setdefault(_v, "1")


def main(argv):
    try:
        args = [a for a in argv if not a.startswith("--")]
        flags = set(argv) - set(args)
        if len(args) != 3 or flags - {"--exact", "--no-hash"}:
            raise ValueError("usage: python -m certcheck CERT ONNX VNNLIB [--exact] [--no-hash]")
        from . import check
        res = check(*args, exact="--exact" in flags, check_hash="--no-hash" not in flags)
        print(res.status if res.status == "accepted" else f"{res.status}: {res.reason}")
        return {"accepted": 0, "unsupported": 2}.get(res.status, 1)
    except BaseException as e:  # never a traceback, never an acceptance
        print(f"rejected: internal error: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
