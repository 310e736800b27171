"""SAML endpoints; the protocol work happens in ``idp/saml/``."""

from pyramid.response import Response
from pyramid.view import view_config

from idp.saml.metadata import MEDIA_TYPE


@view_config(route_name="saml.metadata")
def metadata(request):
    request.tm.doom()
    settings = request.registry.settings
    response = Response(
        body=request.registry["idp.metadata"].get(),
        content_type=MEDIA_TYPE,
        charset="utf-8",
    )
    response.cache_control.public = True
    response.cache_control.max_age = settings["idp.metadata_cache_seconds"]
    response.content_disposition = 'inline; filename="idp-metadata.xml"'
    return response
