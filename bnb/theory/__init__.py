"""Demonstrations of the theory in THEORY.md (``docs/theory.md``): constructions, precision of the
relaxations, the two completeness-recovery strategies (partitioning, augmentation) and the error of the
full relaxation against depth and radius. Each module backs one command of ``bnb``."""
