"""Paginated, sortable lists for the admin console, from the query string.

A list page declares the columns it may be sorted by (each a name and an
SQL expression) and its default; :func:`listing` reads ``page``, ``sort``
and ``dir`` from the request, refuses anything else with a 400 (the
bilingual page: a bad value is the link's fault, never a 500), counts the
rows, and fetches one page, through :mod:`idp.services.listing`. The
template draws the sortable headers and the pager from the
:class:`Listing` (``templates/admin/_listing.jinja2``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pyramid.httpexceptions import HTTPBadRequest

from idp.services.errors import Invalid
from idp.services.listing import MAX_PAGE, number_value, one_value, paginate
from idp.services.listing import Listing as Asked

PER_PAGE = 25
DIRECTIONS = ("asc", "desc")


@dataclass
class Listing:
    """One page of a list, and how to link to the others."""

    items: Sequence[Any]
    total: int
    page: int
    pages: int
    sort: str
    direction: str
    path: str
    # The other query parameters a link keeps (the search, the filters).
    keep: Mapping[str, str] = field(default_factory=dict)

    def url(self, *, page: int | None = None, sort: str | None = None) -> str:
        """This list's address at another page, or sorted by ``sort``
        (again on the same column: the other direction), from the first page."""
        params = dict(self.keep)
        if sort is not None:
            direction = (
                "desc" if sort == self.sort and self.direction == "asc" else "asc"
            )
            params.update(sort=sort, dir=direction)
        else:
            params.update(sort=self.sort, dir=self.direction, page=str(page or 1))
        return f"{self.path}?{urlencode(params)}"

    def aria_sort(self, column: str) -> str:
        if column != self.sort:
            return "none"
        return "ascending" if self.direction == "asc" else "descending"


def listing(
    request,
    statement,
    columns: Mapping[str, Any],
    *,
    default: str,
    direction: str = "asc",
    tiebreak: Any,
    keep: Mapping[str, str] | None = None,
    per_page: int = PER_PAGE,
) -> Listing:
    """One page of ``statement``'s rows as the request asks for it.

    ``columns`` maps each sortable name to its SQL expression;
    ``tiebreak`` (a unique column) makes the order total, so a row never
    shows on two pages. A page past the end shows the last one. The query
    values are read and the page fetched by :mod:`idp.services.listing`,
    the console's one pager; other parameters (the list's filters) pass.
    """
    try:
        sort = one_value(request.GET, "sort") or default
        chosen = one_value(request.GET, "dir") or direction
        page = number_value(
            one_value(request.GET, "page"), "page", 1, MAX_PAGE, default=1
        )
    except Invalid:
        raise HTTPBadRequest() from None
    if sort not in columns or chosen not in DIRECTIONS:
        raise HTTPBadRequest()
    asked = Asked(page=page, per=per_page, sort=sort, descending=chosen == "desc")
    found = paginate(
        request.dbsession,
        statement,
        asked,
        columns,
        tiebreak=tiebreak,
        last_page_past_the_end=True,
    )
    return Listing(
        items=found.items,
        total=found.total,
        page=found.listing.page,
        pages=found.pages,
        sort=sort,
        direction=chosen,
        path=request.path,
        keep=dict(keep or {}),
    )
