"""Domain services, each behind an interface in ``interfaces.py``."""


def includeme(config):
    config.include(".passwords")
