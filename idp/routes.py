"""Every route of the IdP, in one place."""

# Load balancers probe this path by the node's address; idp/tweens.py lets
# it through whatever the Host header says.
HEALTH_PATH = "/healthz"
# Scrapers too (idp.views.metrics, guarded by idp.metrics_allow).
METRICS_PATH = "/metrics"


def includeme(config):
    config.add_static_view("static", "idp:static/", cache_max_age=3600)
    config.add_route("home", "/")
    config.add_route("healthz", HEALTH_PATH)
    config.add_route("metrics", METRICS_PATH)
    config.add_route("saml.metadata", "/saml/metadata")
    # Metadata Query (draft-young-md-query-saml) for idMe's own entity; the
    # path arrives URL-decoded, so an entity ID's slashes are in {id}.
    config.add_route("saml.mdq", "/saml/mdq/entities/{id:.+}")
    config.add_route("saml.mdq_partner", "/saml/mdq/sp/{token}/entities/{id:.+}")
    config.add_route("saml.sso.redirect", "/saml/sso/redirect")
    config.add_route("saml.sso.post", "/saml/sso/post")
    config.add_route("saml.sso.continue", "/saml/sso/continue")
    config.add_route("saml.init", "/saml/init/{sp}")
    config.add_route("saml.slo.redirect", "/saml/slo/redirect")
    config.add_route("saml.slo.post", "/saml/slo/post")
    config.add_route("saml.slo.next", "/saml/slo/next")
    config.add_route("saml.slo.done", "/saml/slo/done")
    config.add_route("register.index", "/register")
    config.add_route("register.done", "/register/done")
    config.add_route("help.index", "/help")
    config.add_route("pages.privacy", "/privacy")
    config.add_route("pages.security", "/security")
    config.add_route("pages.accessibility", "/accessibility")
    config.add_route("pages.helpdesk", "/helpdesk")
    config.add_route("pages.developers", "/developers")
    config.add_route("pages.crest", "/crest")
    config.add_route("login.identifier", "/login")
    config.add_route("login.image", "/login/image")
    config.add_route("login.password", "/login/password")
    config.add_route("login.code", "/login/code")
    config.add_route("login.not_mine", "/login/not-my-image")
    config.add_route("login.logout", "/logout")
    config.add_route("password.new", "/password/new")
    config.add_route("reset.request", "/password/forgot")
    config.add_route("reset.sent", "/password/forgot/sent")
    config.add_route("reset.verify", "/password/reset")
    config.add_route("reset.new", "/password/reset/new")
    config.add_route("reset.link", "/password/reset/{token}")
    config.add_route("account.index", "/account")
    config.add_route("account.password", "/account/password")
    config.add_route("account.security", "/account/security")
    config.add_route("account.sessions", "/account/sessions")
    config.add_route("account.two_step", "/account/two-step")
    config.add_route("account.two_step_setup", "/account/two-step/setup")
    config.add_route("account.two_step_codes", "/account/two-step/recovery-codes")
    config.add_route("account.two_step_off", "/account/two-step/off")
    config.add_route("account.email", "/account/email")
    config.add_route("account.email_confirm", "/account/email/confirm")
    config.add_route("account.email_link", "/account/email/confirm/{token}")
    # The admin console: every page's context is AdminRoot (its ACL); the
    # two steps an admin may owe first have the site's root.
    config.add_route("admin.verify", "/admin/verify")
    config.add_route("admin.reauthenticate", "/admin/reauthenticate")
    admin = {"factory": "idp.authz.AdminRoot"}
    config.add_route("admin.index", "/admin", **admin)
    config.add_route("admin.grants", "/admin/grants", **admin)
    config.add_route("admin.users", "/admin/users", **admin)
    config.add_route("admin.user", "/admin/users/{id}", **admin)
    config.add_route("admin.user_act", "/admin/users/{id}/{act}", **admin)
    # The registry, audit, outbox and dashboard pages (idp/views/admin_*.py).
    # An SP's entityID is a URI: it travels in the query (?e=), not the path.
    config.add_route("admin.dashboard", "/admin/dashboard", **admin)
    config.add_route("admin.roles", "/admin/roles", **admin)
    config.add_route("admin.role", "/admin/roles/{name}", **admin)
    config.add_route("admin.modules", "/admin/modules", **admin)
    config.add_route("admin.module", "/admin/modules/{code}", **admin)
    config.add_route("admin.sps", "/admin/sps", **admin)
    config.add_route("admin.sp", "/admin/sp", **admin)
    config.add_route("admin.sp_upload", "/admin/sps/upload", **admin)
    config.add_route("admin.sp_remove", "/admin/sp/remove", **admin)
    config.add_route("admin.sources", "/admin/sources", **admin)
    config.add_route("admin.audit", "/admin/audit", **admin)
    config.add_route("admin.audit_export", "/admin/audit.csv", **admin)
    config.add_route("admin.audit_verify", "/admin/audit/verify", **admin)
    config.add_route("admin.outbox", "/admin/outbox", **admin)
    config.add_route("captcha.image", "/captcha/{token}.png")
    config.add_route("captcha.audio", "/captcha/{token}.{locale}.wav")
