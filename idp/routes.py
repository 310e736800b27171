"""Every route of the IdP, in one place."""


def includeme(config):
    config.add_static_view("static", "idp:static/", cache_max_age=3600)
    config.add_route("home", "/")
    config.add_route("healthz", "/healthz")
    config.add_route("saml.metadata", "/saml/metadata")
