"""Jinja2 over the top-level ``templates/`` folder, autoescaped."""

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def _static(request):
    return lambda path: request.static_path("idp:static/" + path)


def includeme(config):
    settings = config.get_settings()
    settings.setdefault("jinja2.directories", str(TEMPLATES_DIR))
    config.add_request_method(_static, "static", reify=True)
