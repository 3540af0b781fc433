"""One instance end to end: load, parse, screen, attack, prove, answer (:func:`bnb.pipeline.verify.verify`), the
presets, and the Python API (:class:`bnb.pipeline.api.Verifier`)."""
