"""bnb: problem in, verdict out.

Network and specification loading, the branch-and-bound engine, falsification, results, configuration,
the command line and the benchmark runner.
"""
__version__ = "0.1.0"
