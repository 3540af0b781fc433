"""TEMPORARY until the relaxations' BoundOptions lands: the config's bounds section itself."""


def bound_options(cfg):
    return cfg.bounds
