"""The names of the bounding methods (no imports: the command line's help text reads them without torch)."""
SINGLE_NEURON_METHODS = ("ibp", "crown", "dp0", "dp1", "alpha", "beta")
# LP-based methods (relaxations.lp): one LP model per box, solved domain by domain (small networks)
LP_METHODS = ("lp", "mn", "p1", "anderson", "milp")
# LPs of sigmoid/tanh/softplus chains with one-dimensional or multi-input hull cuts (relaxations.lp.smooth)
SMOOTH_LP_METHODS = ("hull1d", "hull")
# batched back-substitution with multi-neuron constraints (relaxations.multineuron)
MULTI_NEURON_METHODS = ("mn-crown",)
METHODS = SINGLE_NEURON_METHODS + MULTI_NEURON_METHODS + LP_METHODS + SMOOTH_LP_METHODS
