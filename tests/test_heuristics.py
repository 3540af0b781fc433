"""Every branching heuristic on hand-made domains where the right choice is known, and the registry."""
from __future__ import annotations

import textwrap

import pytest
import torch

from heuristics import InputBatch, ReluBatch, UnknownHeuristic, lookahead_choice, names, resolve, splittable
from relaxations.network import Network

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)


def _ibatch(lo, hi, A=None, values=None, ok=None, **kw):
    lo, hi = torch.tensor(lo), torch.tensor(hi)
    if A is not None:
        A = torch.tensor(A)
        if A.dim() == 2:
            A = A[:, None]
    if values is None and A is not None:
        values = -torch.ones(A.shape[0], A.shape[1])
    ok = splittable(lo, hi) if ok is None else ok
    return InputBatch(lo, hi, ok, A, values, **kw)


def choose(kind, name, batch):
    return resolve(kind, name)(batch).tolist()


def test_widest_and_smart():
    b = _ibatch([[0.0, 0.0, 0.0]], [[1.0, 3.0, 2.0]], [[10.0, 0.1, 1.0]])
    assert choose("input", "widest", b) == [1]
    assert choose("input", "smart", b) == [0]  # 10 * 1 beats 0.1 * 3 and 1 * 2


def test_sb_maximises_over_open_polytopes_and_weighs_the_margin():
    # polytope 0 is nearly refuted (value -0.01), polytope 1 far from it (-5); polytope 2 is refuted
    A = [[[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 100.0]]]
    b = _ibatch([[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]], A, torch.tensor([[-0.01, -5.0, 0.3]]))
    assert choose("input", "sb", b) == [0]   # the refuted polytope's large coefficient does not count
    b.sb_margin = 1.0                         # the margin term favours the polytope closest to refutation ...
    b.A = torch.tensor([[[0.2, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 100.0]]])
    assert choose("input", "sb", b) == [0]   # ... 0.1 - 0.01 beats 0.5 - 5
    b.sb_margin = 0.0
    assert choose("input", "sb", b) == [1]


def test_smear_uses_the_interval_gradient():
    # y = relu(x0) + 3 relu(x1) - relu(x2); x1 inactive (its pre-activation < 0) on the box: gradient 0
    lin1 = torch.nn.Linear(3, 3)
    lin1.weight.data = torch.eye(3)
    lin1.bias.data.zero_()
    lin2 = torch.nn.Linear(3, 1)
    lin2.weight.data = torch.tensor([[1.0, 3.0, -1.0]])
    lin2.bias.data.zero_()
    net = Network.from_torch(torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2), (3,)).to(dtype=torch.float32)
    lo, hi = torch.tensor([[-1.0, -2.0, -1.0]]), torch.tensor([[1.0, -1.0, 2.0]])
    pre = [(lo.clone(), hi.clone())]
    C = torch.tensor([[[1.0]]])
    b = _ibatch(lo.tolist(), hi.tolist(), [[1.0, 3.0, 0.5]], net=net, C=C, pre_bounds=pre)
    assert choose("input", "smart", b) == [1]  # |3| * 1 beats 1 * 2 and 0.5 * 3
    assert choose("input", "smear", b) == [2]  # x1's gradient is 0 on the box; x2: 1 * 3 beats x0: 1 * 2
    from heuristics.input_split import gradient_interval
    g_lo, g_hi = gradient_interval(net, C, pre)
    assert g_lo.tolist() == [[[0.0, 0.0, -1.0]]] and g_hi.tolist() == [[[1.0, 0.0, 0.0]]]


class _Callback:
    """A look-ahead callback with known child scores: ``table[d][dim]`` = the two children's scores."""

    def __init__(self, table, parts=2):
        self.table, self.calls, self.parts = table, [], parts

    def __call__(self, cands):
        self.calls.append(cands.clone())
        n, k = cands.shape
        out = torch.zeros(self.parts, k, n)
        for i in range(n):
            for j in range(k):
                out[:, j, i] = torch.tensor(self.table[i][int(cands[i, j])])
        return out


def test_mixed_brute_force_and_lookahead_keep_the_split_that_verifies_most():
    lo, hi = [[0.0, 0.0, 0.0]], [[1.0, 3.0, 2.0]]
    A = [[10.0, 0.1, 1.0]]
    # splitting dim 2 verifies both halves, dim 0 (smart's favourite) and dim 1 (widest) nothing
    cb = _Callback([{0: [-1.0, -1.0], 1: [-0.5, -0.5], 2: [0.1, 0.2]}])
    b = _ibatch(lo, hi, A, evaluate=cb)
    assert choose("input", "mixed", b) == [1]                  # between smart's 0 and widest's 1
    assert cb.calls[-1].tolist() == [[0, 1]]
    assert choose("input", "brute-force", b) == [2]            # every dimension
    assert cb.calls[-1].tolist() == [[0, 1, 2]]
    b.lookahead = 2
    assert choose("input", "smart", b) == [2] and cb.calls[-1].tolist() == [[0, 2]]
    b.lookahead = 1
    assert choose("input", "smart", b) == [0] and len(cb.calls) == 3  # no look-ahead: no callback


def test_lookahead_keeps_the_split_that_leaves_least_unverified_margin():
    # (2 children, 3 candidates, 2 domains)
    child = torch.tensor([[[0.5, -1.0], [0.1, 0.2], [-0.3, 0.0]],
                          [[-0.2, 0.3], [0.05, -0.5], [0.9, 0.1]]])
    assert lookahead_choice(child).tolist() == [1, 2]
    # verifying one half beats changing neither half, though its other half is a little worse
    # (the numbers of a stuck ACAS Xu 4_2/prop_2 domain)
    child = torch.tensor([[[-0.0137], [-0.0156]], [[-0.0137], [0.0030]]])
    assert lookahead_choice(child).tolist() == [1]


def test_dimensions_below_resolution_are_never_offered():
    lo = torch.tensor([[0.0, 1.0, 0.0]])
    hi = torch.tensor([[1.0, 1.0 + 1e-7, 1e-9]])  # dim 1: the midpoint rounds to an end in float32
    ok = splittable(lo, hi, torch.tensor([0.0, 0.0, 1e-6]))
    assert ok.tolist() == [[True, False, False]]
    b = _ibatch(lo.tolist(), hi.tolist(), [[1.0, 1e9, 1e9]], ok=ok, evaluate=_Callback([{0: [0, 0]}]))
    for name in names("input"):
        assert choose("input", name, b) == [0], name


def test_multiway_split_covers_the_box():
    from bnb.engine.strategies.input_split import split_boxes
    lo, hi = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0 + 2e-7]])
    c_lo, c_hi = split_boxes(lo, hi, torch.tensor([0]), 3)
    assert c_lo[:, 0].tolist() == pytest.approx([0, 1 / 3, 2 / 3]) and c_hi[:, 0].tolist() == pytest.approx([1 / 3,
                                                                                                             2 / 3, 1])
    assert (c_hi[:-1, 0] == c_lo[1:, 0]).all() and (c_lo[:, 1] == 1.0).all()
    c_lo, c_hi = split_boxes(lo, hi, torch.tensor([1]), 5)  # cuts below resolution: still a cover, no empty box
    assert c_lo[0, 1] == lo[0, 1] and c_hi[-1, 1] == hi[0, 1]
    assert (c_hi[:-1, 1] == c_lo[1:, 1]).all() and (c_lo[:, 1] <= c_hi[:, 1]).all()


# ----------------------------------------------------------------------------- ReLU
def _rbatch(l, u, coef, splits=None, **kw):
    l, u, coef = torch.tensor(l), torch.tensor(u), torch.tensor(coef)
    splits = [torch.zeros_like(l, dtype=torch.int8) if splits is None else torch.tensor(splits, dtype=torch.int8)]
    return ReluBatch([(l, u)], [coef], splits, **kw)


def test_relu_rules_never_choose_stable_or_split_neurons():
    # only neuron 0 is free: 1 is stable active, 2 stable inactive, 3 already split
    b = _rbatch([[-1.0, 0.5, -2.0, -1.0]], [[1.0, 2.0, -0.1, 3.0]], [[-1.0, -5.0, -5.0, -1.0]], [[0, 0, 0, 1]],
                evaluate=_Callback([{0: [0.0, 0.0], 1: [1.0, 1.0], 2: [1.0, 1.0], 3: [1.0, 1.0]}]),
                generator=torch.Generator().manual_seed(0), biases=[torch.zeros(4)])
    for name in names("relu"):
        assert choose("relu", name, b) == [0], name


def test_babsr_prefers_the_costly_intercept():
    b = _rbatch([[-1.0, -1.0, -1.0]], [[1.0, 1.0, 4.0]], [[-1.0, 2.0, -1.0]])  # positive coefficient: no intercept
    assert choose("relu", "babsr", b) == [2]
    assert choose("relu", "intercept", b) == [2]
    from heuristics.relu_split import babsr_scores, intercept_scores
    s = babsr_scores(b)[0]
    assert s[0, 1] < s[0, 0]
    assert intercept_scores(b)[0][0, 1] == 0 and intercept_scores(b)[0][0, 2] == pytest.approx(0.8)


def test_babsr_bias_term_changes_the_choice():
    # same intercepts (neurons 0 and 1: l=-1, u=1, lam=-1: gain 0.5); neuron 1's bias of 4 moves the bound
    # by min(lam b (1 - s), -lam b s) = min(-2, 2) = -2 in its worse child: |0.5 - 2| = 1.5 beats 0.5
    b = _rbatch([[-1.0, -1.0]], [[1.0, 1.0]], [[-1.0, -1.0]], biases=[torch.tensor([0.0, 4.0])])
    assert choose("relu", "babsr-bias", b) == [1]
    b.biases = None  # without biases it is the intercept score (tie: the first)
    assert choose("relu", "babsr-bias", b) == [0]


def test_width_and_random():
    b = _rbatch([[-1.0, -3.0, -0.5]], [[1.0, 2.0, 0.5]], [[-9.0, 0.0, -9.0]])
    assert choose("relu", "width", b) == [1]
    picks = set()
    for seed in range(20):
        b.generator = torch.Generator().manual_seed(seed)
        picks.add(choose("relu", "random", b)[0])
    assert picks == {0, 1, 2}
    b.generator = torch.Generator().manual_seed(3)
    first = choose("relu", "random", b)
    b.generator = torch.Generator().manual_seed(3)
    assert choose("relu", "random", b) == first  # seeded


def test_fsb_and_kfsb_bound_their_candidates_and_keep_the_best():
    # two layers; the babsr/intercept favourite (layer 0, neuron 0) verifies nothing when split, while
    # layer 1's neuron 0 (flat position 3) verifies both children
    l0, u0 = torch.tensor([[-4.0, -1.0, -1.0]]), torch.tensor([[4.0, 1.0, 1.0]])
    l1, u1 = torch.tensor([[-1.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    coeffs = [torch.tensor([[-1.0, -0.5, -0.1]]), torch.tensor([[-0.3, -0.2]])]
    table = [{0: [-1.0, -1.0], 1: [-1.0, -1.0], 2: [-1.0, -1.0], 3: [0.1, 0.1], 4: [-1.0, -1.0]}]
    cb = _Callback(table)
    splits = [torch.zeros(1, 3, dtype=torch.int8), torch.zeros(1, 2, dtype=torch.int8)]
    b = ReluBatch([(l0, u0), (l1, u1)], coeffs, splits, evaluate=cb, topk=1)
    assert choose("relu", "babsr", b) == [0]
    assert choose("relu", "fsb", b) == [3]             # the best of each layer is a candidate
    assert sorted(set(cb.calls[-1][0].tolist())) == [0, 3]
    assert choose("relu", "kfsb", b) == [0]            # global top-1 misses layer 1 ...
    b.topk = 4
    assert choose("relu", "kfsb", b) == [3]            # ... the top 4 include it
    b.lookahead, b.topk = 4, 1
    assert choose("relu", "babsr", b) == [3]           # plain look-ahead among babsr's 4 best


def test_acs_follows_the_multipliers():
    class Cons:  # one constraint involving neuron 2 only
        Pz = torch.tensor([[0.0, 0.0, 1.0]])
        Px = torch.tensor([[0.0, 0.0, 0.5]])
    b = _rbatch([[-1.0, -1.0, -1.0]], [[4.0, 1.0, 1.0]], [[-1.0, -1.0, -1.0]], gammas=[torch.tensor([[2.0]])],
                constraints=[Cons()])
    assert choose("relu", "babsr", b) == [0] and choose("relu", "acs", b) == [2]
    b.gammas = [torch.tensor([[0.0]])]
    assert choose("relu", "acs", b) == [0]  # no active constraint: babsr decides


def _two_layers(links=True, splits1=None):
    """Layer 0: neurons A (babsr's favourite: l=-1, u=1, lam=-1) and B (same interval, lam=-0.5); layer 1: two
    unstable neurons (l=-0.1, u=10, lam=-2) that read B alone, with weight 4 (the link ``(2, 2)``)."""
    l0, u0 = torch.tensor([[-1.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    l1, u1 = torch.tensor([[-0.1, -0.1]]), torch.tensor([[10.0, 10.0]])
    coeffs = [torch.tensor([[-1.0, -0.5]]), torch.tensor([[-2.0, -2.0]])]
    s1 = torch.zeros(1, 2, dtype=torch.int8) if splits1 is None else torch.tensor([splits1], dtype=torch.int8)
    splits = [torch.zeros(1, 2, dtype=torch.int8), s1]
    link = [None, torch.tensor([[0.0, 4.0], [0.0, -4.0]])] if links else None
    return ReluBatch([(l0, u0), (l1, u1)], coeffs, splits, links=link)


def test_deepsplit_adds_the_indirect_effect_through_later_unstable_neurons():
    from heuristics.relu_split import babsr_scores, deepsplit_scores
    b = _two_layers()
    assert choose("relu", "babsr", b) == [0]       # A's direct term 0.5 beats B's 0.25 ...
    assert choose("relu", "deepsplit", b) == [1]   # ... but B's error widens both later neurons
    # by hand: rho = (0.1^2 + 10^2) / (2 * 10.1^2) per unit of width, each unit of intercept costs |lam| = 2
    rho = (0.01 + 100.0) / (2 * 10.1 ** 2)
    h_b = 2 * (rho * 2.0) * 4.0                    # two later neurons, |weight| 4 each
    s = deepsplit_scores(b)
    assert s[0][0, 1].item() == pytest.approx(0.5 * 0.5 + 1e-4 * 0.5 + 0.5 * h_b, rel=1e-6)
    assert s[0][0, 0].item() == pytest.approx(babsr_scores(b)[0][0, 0].item())  # A reads into nothing
    assert torch.equal(s[1], babsr_scores(b)[1])  # the last layer has no later neurons: babsr
    # split (no longer free) later neurons take no indirect effect: babsr's choice again
    assert choose("relu", "deepsplit", _two_layers(splits1=[1, -1])) == [0]
    # no links (or a link left out): babsr
    assert choose("relu", "deepsplit", _two_layers(links=False)) == [0]
    b.links = [None, None]
    assert choose("relu", "deepsplit", b) == [0]


def test_deepsplit_follows_relaxation_slopes_through_a_middle_layer():
    # x (layer 0, neuron 0 or 1) -> layer 1 (one neuron, stable or split) -> layer 2 (one unstable neuron)
    def batch(split1):
        pre = [(torch.tensor([[-1.0, -1.0]]), torch.tensor([[1.0, 1.0]])),
               (torch.tensor([[-1.0]]), torch.tensor([[1.0]])),
               (torch.tensor([[-0.5]]), torch.tensor([[1.0]]))]
        coeffs = [torch.tensor([[-1.0, -0.9]]), torch.tensor([[0.0]]), torch.tensor([[-1.0]])]
        splits = [torch.zeros(1, 2, dtype=torch.int8), torch.tensor([[split1]], dtype=torch.int8),
                  torch.zeros(1, 1, dtype=torch.int8)]
        links = [None, torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0]])]
        return ReluBatch(pre, coeffs, splits, links=links)
    assert choose("relu", "deepsplit", batch(1)) == [1]    # active: neuron 1's error reaches layer 2 (slope 1)
    assert choose("relu", "deepsplit", batch(-1)) == [0]   # inactive: the path is cut (slope 0): babsr's choice


def _contract_batch(links):
    """Two domains over two layers; domain 0 has free unstable neurons only at flat positions 1 and 3 (0 stable,
    2 split, 4 stable inactive), domain 1 none at all (every unstable neuron already split)."""
    l0 = torch.tensor([[0.5, -1.0, -2.0], [-1.0, -1.0, -1.0]])
    u0 = torch.tensor([[2.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
    l1, u1 = torch.tensor([[-1.0, -3.0], [-1.0, -1.0]]), torch.tensor([[1.0, -0.5], [1.0, 1.0]])
    coeffs = [torch.tensor([[-5.0, -1.0, -5.0], [-1.0, -1.0, -1.0]]), torch.tensor([[-1.0, -9.0], [-1.0, -1.0]])]
    splits = [torch.tensor([[0, 0, 1], [1, -1, 1]], dtype=torch.int8),
              torch.tensor([[0, 0], [-1, 1]], dtype=torch.int8)]
    link = [None, torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, 0.5]])] if links else None
    return ReluBatch([(l0, u0), (l1, u1)], coeffs, splits, [torch.zeros(3), torch.zeros(2)],
                     generator=torch.Generator().manual_seed(0), links=link)


@pytest.mark.parametrize("links", [True, False])
def test_every_relu_rule_keeps_the_contract_over_layers(links):
    """Every registered ReLU heuristic: only free unstable neurons, ``-1`` for a domain with none, and (all but
    ``random``) the same choice twice."""
    for name in names("relu"):
        got = choose("relu", name, _contract_batch(links))
        assert got[0] in (1, 3) and got[1] == -1, (name, got)
        if name != "random":
            assert choose("relu", name, _contract_batch(links)) == got, name


def test_relu_links_are_the_weights_between_relu_layers():
    from bnb.engine.strategies.relu_split import relu_links
    torch.manual_seed(0)
    mods = [torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2),
            torch.nn.ReLU(), torch.nn.Linear(2, 1)]
    net = Network.from_torch(torch.nn.Sequential(*mods), (3,)).to(dtype=torch.float64)
    links = relu_links(net, [4, 5, 2])
    assert links[0] is None
    assert torch.allclose(links[1], mods[2].weight.double()) and torch.allclose(links[2], mods[4].weight.double())
    small = relu_links(net, [4, 5, 2], max_entries=12)  # 5 x 4 = 20 entries: too large; 2 x 5 = 10 kept
    assert small[1] is None and torch.equal(small[2], links[2])
    assert relu_links(net, [4, 5]) is None  # sizes that do not match the network


# ----------------------------------------------------------------------------- registry and plug-ins
def test_unknown_names_are_readable():
    with pytest.raises(UnknownHeuristic, match="did you mean 'babsr'"):
        resolve("relu", "babsrr")
    with pytest.raises(UnknownHeuristic, match="cannot import module"):
        resolve("relu", "no_such_module_xyz:f")
    with pytest.raises(UnknownHeuristic, match="not found"):
        resolve("input", "/nonexistent/file.py:f")


def test_plugin_file_scores_and_choices(tmp_path):
    plug = tmp_path / "my_rules.py"
    plug.write_text(textwrap.dedent('''
        import torch
        def last_dim(batch):            # scores (N, n_in): the engine takes the best
            s = torch.zeros_like(batch.lower)
            s[:, -1] = 1
            return s
        def first_free(batch):          # a choice per domain: the first free neuron
            return torch.cat(batch.free(), dim=1).int().argmax(dim=1)
        def bad(batch):
            return "nonsense"
    '''))
    b = _ibatch([[0.0, 0.0, 0.0]], [[1.0, 3.0, 2.0]], [[10.0, 0.1, 1.0]])
    assert choose("input", f"{plug}:last_dim", b) == [2]
    r = _rbatch([[1.0, -1.0, -1.0]], [[2.0, 1.0, 1.0]], [[-1.0, -1.0, -5.0]])
    assert choose("relu", f"{plug}:first_free", r) == [1]
    with pytest.raises(UnknownHeuristic, match="must return"):
        choose("relu", f"{plug}:bad", r)
    with pytest.raises(UnknownHeuristic, match="has no function"):
        resolve("relu", f"{plug}:missing")


def test_builtin_tables_and_registered_names(monkeypatch):
    """The built-in modules export their tables (read by the registry); ``register`` adds a name, also of a further
    kind, and a registered name shadows a built-in one."""
    from heuristics import input_split, register, registry, relu_split
    assert names("input") == tuple(input_split.HEURISTICS) and input_split.KIND == "input"
    assert names("relu") == tuple(relu_split.HEURISTICS) and relu_split.KIND == "relu"
    monkeypatch.setattr(registry, "_REGISTERED", {"input": {}, "relu": {}})

    def first(batch):
        return torch.zeros(batch.n, dtype=torch.long)
    register("input", "first")(first)
    register("input", "widest")(first)
    register("polytope", "first")(first)
    assert names("input")[-1] == "first" and resolve("input", "first") is first
    assert resolve("input", "widest") is first
    assert names("polytope") == ("first",) and resolve("polytope", "first") is first


def test_babsr_counts_the_triangle_before_and_after_the_constraint_terms():
    """With constraints ``babsr`` sums the intercept gain at the coefficient before their terms and after them
    (``lam + gamma Pz``): neuron 0 (widest triangle, coefficient -1, relieved by a constraint) stays its choice;
    ``babsr-gamma`` scores the coefficient after the terms alone (then neuron 1)."""
    from heuristics.relu_split import babsr_scores
    class Cons:  # one constraint on neuron 0's output
        Pz = torch.tensor([[1.0, 0.0, 0.0]])
        Px = torch.tensor([[0.0, 0.0, 0.0]])
    b = _rbatch([[-1.0, -1.0, -1.0]], [[4.0, 1.0, 1.0]], [[-1.0, -0.6, -0.5]], gammas=[torch.tensor([[1.0]])],
                constraints=[Cons()])
    # intercepts 0.8, 0.5, 0.5; coefficients after the terms 0, -0.6, -0.5
    expect = torch.tensor([[0.8 + 1e-4 + 0.0, 0.3 + 0.3 + 1.2e-4, 0.25 + 0.25 + 1e-4]])
    assert torch.allclose(babsr_scores(b)[0], expect)
    assert choose("relu", "babsr", b) == [0] and choose("relu", "babsr-gamma", b) == [1]
    b.gammas = [torch.tensor([[0.0]])]
    assert choose("relu", "babsr-gamma", b) == [0]  # no active constraint: babsr's choice
