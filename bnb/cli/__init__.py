"""The command lines: ``bnb`` (:mod:`bnb.cli.main`) and the VNN-LIB 2.0 solver interface ``bnb-vnnlib``
(:mod:`bnb.cli.vnnlib`)."""
