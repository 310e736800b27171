"""Paginated, sortable lists for the admin console, from the query string.

A list page declares the columns it may be sorted by (each a name and an
SQL expression) and its default; :func:`listing` reads ``page``, ``sort``
and ``dir`` from the request, refuses anything else with a 400 (the
bilingual page: a bad value is the link's fault, never a 500), counts the
rows, and fetches one page. The template draws the sortable headers and the
pager from the :class:`Listing` (``templates/admin/_listing.jinja2``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pyramid.httpexceptions import HTTPBadRequest
from sqlalchemy import func, select

PER_PAGE = 25
# Far beyond any real list; a bigger number is a mistake, not a page.
MAX_PAGE = 100_000
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


def _one(request, name: str) -> str | None:
    values = request.GET.getall(name)
    if len(values) > 1:
        raise HTTPBadRequest()
    return values[0] if values else None


def listing(
    request,
    statement,
    columns: Mapping[str, Any],
    *,
    default: str,
    direction: str = "asc",
    tiebreak: Any = None,
    keep: Mapping[str, str] | None = None,
    per_page: int = PER_PAGE,
) -> Listing:
    """One page of ``statement``'s rows as the request asks for it.

    ``columns`` maps each sortable name to its SQL expression;
    ``tiebreak`` (a unique column) makes the order total, so a row never
    shows on two pages. A page past the end shows the last one.
    """
    sort = _one(request, "sort") or default
    chosen = _one(request, "dir") or direction
    page_text = _one(request, "page") or "1"
    if sort not in columns or chosen not in DIRECTIONS:
        raise HTTPBadRequest()
    if not (page_text.isascii() and page_text.isdigit() and len(page_text) <= 6):
        raise HTTPBadRequest()
    page = int(page_text)
    if not 1 <= page <= MAX_PAGE:
        raise HTTPBadRequest()
    total = request.dbsession.scalar(
        select(func.count()).select_from(statement.order_by(None).subquery())
    )
    pages = max(1, -(-total // per_page))
    page = min(page, pages)
    column = columns[sort]
    order = [column.asc() if chosen == "asc" else column.desc()]
    if tiebreak is not None:
        order.append(tiebreak)
    rows = request.dbsession.scalars(
        statement.order_by(*order).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return Listing(
        items=rows,
        total=total,
        page=page,
        pages=pages,
        sort=sort,
        direction=chosen,
        path=request.path,
        keep=dict(keep or {}),
    )
