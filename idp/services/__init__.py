"""Domain services, each behind an interface in ``interfaces.py``."""


def includeme(config):
    config.include(".passwords")
    config.include(".mail")
    config.include(".delivery")
    config.include(".captcha")
    config.include(".users")
    config.include(".ratelimit")
    config.include(".audit")
    config.include(".signin")
