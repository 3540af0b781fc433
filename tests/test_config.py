"""Typed configuration: defaults, precedence, validation, and configs/default.yaml kept in sync."""
from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from bnb.config import Config, apply_mapping, load_config, parse_override, render_yaml, to_dict
from bnb.errors import ConfigError

from conftest import ROOT

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)

DEFAULT_YAML = ROOT / "configs" / "default.yaml"
REGENERATE = ("python -c \"from bnb.config import Config, render_yaml; "
              "print(render_yaml(Config()), end='')\"")


def strip_header(text: str) -> str:
    """The file without its leading comment block."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        i += 1
    return "".join(lines[i:])


def test_defaults():
    cfg = Config()
    assert cfg.general.device == "auto"
    assert cfg.general.dtype == "float32"
    assert cfg.general.timeout == 300.0
    assert cfg.attack.enabled is True
    assert isinstance(cfg.bounds.method, str) and cfg.bounds.method
    assert load_config() == Config()


def test_every_option_has_help_and_valid_default():
    for sec in fields(Config):
        obj = getattr(Config(), sec.name)
        for f in fields(obj):
            assert f.metadata.get("help"), f"{sec.name}.{f.name} has no help text"
            choices = f.metadata.get("choices")
            if choices:
                assert getattr(obj, f.name) in choices


def test_yaml_then_set_precedence(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("general:\n  seed: 5\n  timeout: 10\nattack:\n  steps: 7\n")
    b = tmp_path / "b.yaml"
    b.write_text("general:\n  seed: 6\n")
    cfg = load_config([a, b], ["general.timeout=3.5", "attack.enabled=false"])
    assert cfg.general.seed == 6            # later file wins
    assert cfg.general.timeout == 3.5       # --set wins over files
    assert isinstance(cfg.general.timeout, float)
    assert cfg.attack.steps == 7            # from the first file
    assert cfg.attack.enabled is False
    assert cfg.attack.restarts == Config().attack.restarts  # untouched default
    assert load_config([a], ["general.seed=1"]).general.seed == 1


def test_empty_yaml_and_empty_section(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("# nothing\n")
    assert load_config([p]) == Config()
    p.write_text("attack:\n")
    assert load_config([p]) == Config()


def test_float_from_yaml_exponent_without_dot(tmp_path):
    p = tmp_path / "f.yaml"
    p.write_text("attack:\n  step_size: 1e-3\n")
    assert load_config([p]).attack.step_size == pytest.approx(1e-3)


def test_unknown_section_and_key_suggest(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("atack:\n  steps: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config([p])
    assert str(p) in str(e.value) and "atack" in str(e.value) and "did you mean 'attack'" in str(e.value)
    p.write_text("attack:\n  stpes: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config([p])
    assert "attack.stpes" in str(e.value) and "did you mean 'attack.steps'" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'general.timeout'") as e:
        load_config([], ["general.timout=3"])
    assert str(e.value).startswith("--set: ")


@pytest.mark.parametrize("override,pattern", [
    ("attack.steps=many", "must be of type int"),
    ("attack.steps=1.5", "must be of type int"),
    ("attack.enabled=3", "must be of type bool"),
    ("general.timeout=soon", "must be of type float"),
    ("general.seed=true", "must be of type int"),
    ("general.device=gpu", "must be one of auto, cpu, cuda"),
    ("general.dtype=float16", "must be one of float32, float64"),
    ("bounds.method=crwon", "must be one of"),
])
def test_ill_typed_values_and_choices(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config([], [override])


def test_choice_typo_suggests():
    with pytest.raises(ConfigError, match="did you mean 'float64'"):
        load_config([], ["general.dtype=float46"])


def test_bad_override_syntax_and_structure(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("timeout=3")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("general.timeout")
    with pytest.raises(ConfigError, match="mapping of sections"):
        apply_mapping(Config(), [1, 2], "x.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        apply_mapping(Config(), {"general": 3}, "x.yaml")


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("general:\n  seed: 1\n  timeout: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_config([p])
    assert str(e.value).startswith(f"{p}:") and "invalid YAML" in str(e.value)
    with pytest.raises(ConfigError, match="no such file"):
        load_config([tmp_path / "absent.yaml"])


def test_render_roundtrip():
    cfg = load_config([], ["general.seed=3", "attack.step_size=0.25", "general.device=cpu"])
    back = apply_mapping(Config(), yaml.safe_load(render_yaml(cfg)), "rendered")
    assert back == cfg
    assert yaml.safe_load(render_yaml(cfg, with_help=False)) == to_dict(cfg)


def test_default_yaml_in_sync():
    assert DEFAULT_YAML.is_file(), "configs/default.yaml is missing"
    text = DEFAULT_YAML.read_text()
    assert text.startswith("#"), "configs/default.yaml should start with its comment header"
    assert strip_header(text) == render_yaml(Config()), (
        "configs/default.yaml is out of date with bnb/config.py; regenerate its body with\n  " + REGENERATE)


def test_default_yaml_loads_to_defaults_and_documents_every_key():
    assert load_config([DEFAULT_YAML]) == Config()
    data = yaml.safe_load(DEFAULT_YAML.read_text())
    lines: dict[tuple[str, str], str] = {}  # (section, key) -> its line
    section = None
    for line in strip_header(DEFAULT_YAML.read_text()).splitlines():
        if line and not line[0].isspace():
            section = line.split(":")[0]
        elif line.strip():
            lines[(section, line.strip().split(":")[0])] = line
    for sec in fields(Config):
        obj = getattr(Config(), sec.name)
        assert set(data[sec.name]) == {f.name for f in fields(obj)}
        for f in fields(obj):
            assert f.metadata["help"] in lines[(sec.name, f.name)], f"{sec.name}.{f.name} is not documented"


def test_presets_change_only_what_nobody_chose():
    from bnb.config import load_config
    from bnb.pipeline.presets import apply

    class Net:
        def __init__(self, n):
            self.in_size = n
    cfg = load_config([], ["bounds.method=alpha", "bab.batch_size=64"])  # alpha is the default: still chosen
    small, name, changed = apply(cfg, Net(5))
    assert name == "input" and small.bounds.method == "alpha" and small.bab.batch_size == 64
    assert small.bab.branching == "input" and small.bab.input_heuristic == "mixed" and "bounds.method" not in changed
    assert cfg.bab.input_heuristic == "smart"  # the caller's config is not modified
    big, name, _ = apply(cfg, Net(784))
    assert name == "relu" and big.bab.branching == "relu" and big.bab.batch_size == 64 and big.bounds.alpha_iters == 50
    cfg.bab.input_lookahead = 3  # set in code: not the default, kept
    assert apply(cfg, Net(5))[0].bab.input_lookahead == 3
    off = load_config([], ["general.preset=none"])
    assert apply(off, Net(5)) == (off, None, {})


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "configs").glob("*.yaml") if p.name != "default.yaml"))
def test_benchmark_configs_only_override_defaults(path):
    """Every benchmark YAML loads, and each key it sets changes a default (configs/ hold only overrides), except
    where it pins a default against the preset that would otherwise change it (bnb/pipeline/presets.py)."""
    from bnb.pipeline.presets import PRESETS
    data = yaml.safe_load((ROOT / "configs" / path).read_text())
    cfg = load_config([ROOT / "configs" / path])
    base = to_dict(Config())
    got = to_dict(cfg)
    for section, keys in data.items():
        for key, value in keys.items():
            assert got[section][key] == value
            pinned = any(key in p.get(section, {}) for p in PRESETS.values())
            assert pinned or base[section][key] != value, f"{path}: {section}.{key} repeats the default {value!r}"


def test_bound_options_defaults_are_the_configs():
    """The library's defaults (relaxations.options) and the config's agree, so a run without a config file and
    a direct call of the bounding methods bound alike."""
    from bnb.engine.bound_options import bound_options
    from relaxations.options import BoundOptions
    assert bound_options(Config()) == BoundOptions()


def test_bound_options_map_every_field():
    """Every field of BoundOptions (and of its MultiNeuronOptions) comes from its own key of the bounds section."""
    from bnb.engine.bound_options import bound_options
    from relaxations.options import BoundOptions
    cfg = load_config([], ["bounds.intermediate=forward", "bounds.lower_slope=zero", "bounds.alpha_lr=0.3",
                           "bounds.beta_lr=0.4", "bounds.gamma_lr=0.6", "bounds.fp_sound=false", "bounds.mn_k=3",
                           "bounds.mn_max_groups=7", "bounds.mn_time=2.5", "bounds.mn_iters=9", "bounds.mn_cuts=both",
                           "bounds.mn_rounds=2", "bounds.mn_tighten=true", "bounds.lp_solver=SCS",
                           "bounds.mn_tighten_time=3.5", "bounds.mn_hull_cuts=5", "bounds.mn_hull_rounds=4",
                           "bounds.lp_refine_time=4.5",
                           "bounds.mix_iters=3"])
    opts = bound_options(cfg)
    default = BoundOptions()
    changed = [f.name for f in fields(BoundOptions) if getattr(opts, f.name) != getattr(default, f.name)]
    # certify is the engine's (set while a certificate's proof is recorded), never the configuration's
    assert changed == [f.name for f in fields(BoundOptions) if f.name != "certify"] and not opts.certify
    assert all(getattr(opts.mn, f.name) != getattr(default.mn, f.name) for f in fields(opts.mn))
    assert (opts.intermediate, opts.lower_slope, opts.alpha_lr, opts.beta_lr, opts.gamma_lr, opts.rigorous) == \
        ("forward", "zero", 0.3, 0.4, 0.6, False)
    assert (opts.mn.k, opts.mn.max_groups, opts.mn.time_budget, opts.mn.octa_iters, opts.mn.cuts, opts.mn.rounds,
            opts.mn.tighten, opts.mn.tighten_time, opts.mn.hull_cuts, opts.mn.hull_rounds) == \
        (3, 7, 2.5, 9, "both", 2, True, 3.5, 5, 4)
    assert (opts.lp_solver, opts.lp_refine_time, opts.mix_iters) == ("SCS", 4.5, 3)
