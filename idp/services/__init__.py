"""Domain services, each behind an interface in ``interfaces.py``.

Code holding a request asks for one with ``request.service(IFoo)``: always
``context=None``, so every caller in a request gets the same instance
(pyramid_services keys its cache by context, and ``find_service`` would
otherwise look the context up and could build a second one).
"""


def service(request, iface):
    """The request's one instance of the service registered for ``iface``."""
    return request.find_service(iface, context=None)


def includeme(config):
    config.add_request_method(service, "service")
    config.include(".passwords")
    config.include(".mail")
    config.include(".delivery")
    config.include(".captcha")
    config.include(".users")
    config.include(".ratelimit")
    config.include(".audit")
    config.include(".signin")
    config.include(".password_reset")
    config.include(".modules")
    config.include(".accounts")
    config.include(".service_providers")
    config.include(".two_factor")
    config.include(".admin")
    config.include(".reports")
    config.include(".mail_queue")
