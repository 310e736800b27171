"""Every route of the IdP, in one place."""


def includeme(config):
    config.add_static_view("static", "idp:static/", cache_max_age=3600)
    config.add_route("home", "/")
    config.add_route("healthz", "/healthz")
    config.add_route("saml.metadata", "/saml/metadata")
    config.add_route("register.index", "/register")
    config.add_route("register.done", "/register/done")
    config.add_route("captcha.image", "/captcha/{token}.png")
    config.add_route("captcha.audio", "/captcha/{token}.{locale}.wav")
