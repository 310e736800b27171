"""Paginated, sortable lists: what a console list accepts in its query string.

A list names the columns it sorts by (a closed mapping from the word in the
URL to a SQL expression) and its default order; :func:`parse_listing`
reads ``page``, ``per``, ``sort`` and ``dir`` from a query string and refuses
anything else it does not know with :class:`Invalid` (``list.bad_query``),
which the console answers with its 400 page. No value from the URL reaches
SQL other than as a bound integer or one of the listed expressions.
:func:`paginate` runs a query for one page and counts the whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select

from idp.services.errors import Invalid

PER_PAGE_CHOICES = (25, 50, 100)
DEFAULT_PER_PAGE = 25
#: Far beyond any real list; bounds OFFSET, which the database walks.
MAX_PAGE = 100_000
#: Query parameters every list takes; a list may accept more (its filters).
LISTING_PARAMS = frozenset({"page", "per", "sort", "dir", "lang"})

T = TypeVar("T")


@dataclass(frozen=True)
class Listing:
    """One page asked for: 1-based ``page``, ``per`` rows, ``sort``, ``descending``."""

    page: int
    per: int
    sort: str
    descending: bool

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per

    def query(
        self, extra: Mapping[str, Any] | None = None, **changes: Any
    ) -> dict[str, str]:
        """The query of this listing with ``changes``, after the list's
        filters ``extra`` (for links that keep them)."""
        values: dict[str, Any] = dict(extra or {})
        values |= {
            "page": self.page,
            "per": self.per,
            "sort": self.sort,
            "dir": "desc" if self.descending else "asc",
        }
        values.update(changes)
        return {key: str(value) for key, value in values.items()}


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and how many rows the whole list has."""

    items: list[T]
    total: int
    listing: Listing

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.listing.per))

    @property
    def has_previous(self) -> bool:
        return self.listing.page > 1

    @property
    def has_next(self) -> bool:
        return self.listing.page < self.pages


def _bad(param: str, value: str) -> Invalid:
    return Invalid(
        "list.bad_query",
        f"{param}: {value[:40]!r} is not a value this list takes",
        field=param,
        param=param,
    )


def one_value(params: Mapping[str, Any], name: str) -> str | None:
    """The single value of ``name``; a repeated parameter is refused."""
    getall = getattr(params, "getall", None)
    found = getall(name) if getall is not None else [params.get(name)]
    values = [str(value) for value in found if value is not None]
    if len(values) > 1:
        raise _bad(name, ",".join(values))
    return values[0] if values else None


def parse_listing(
    params: Mapping[str, Any],
    *,
    sorts: Sequence[str],
    default_sort: str,
    default_descending: bool = False,
    filters: Sequence[str] = (),
) -> Listing:
    """The :class:`Listing` a query string asks for; :class:`Invalid` otherwise.

    ``sorts`` are the keys this list sorts by; ``filters`` the other
    parameters it accepts (the caller reads those). An unknown parameter is
    refused too, so a mistyped filter never silently shows everything.
    """
    allowed = LISTING_PARAMS | set(filters)
    for name in params:
        if name not in allowed:
            raise _bad(name, str(params[name]))
    page = number_value(one_value(params, "page"), "page", 1, MAX_PAGE, default=1)
    per_text = one_value(params, "per")
    per = number_value(
        per_text, "per", 1, max(PER_PAGE_CHOICES), default=DEFAULT_PER_PAGE
    )
    if per not in PER_PAGE_CHOICES:
        raise _bad("per", str(per_text))
    sort = one_value(params, "sort") or default_sort
    if sort not in sorts:
        raise _bad("sort", sort)
    direction = one_value(params, "dir")
    if direction not in (None, "asc", "desc"):
        raise _bad("dir", direction)
    descending = default_descending if direction is None else direction == "desc"
    return Listing(page=page, per=per, sort=sort, descending=descending)


def number_value(
    text: str | None, name: str, low: int, high: int, *, default: int
) -> int:
    if text is None or text == "":
        return default
    # Plain ASCII digits only: int() would take "١٢", "+3", " 3" and "3_0".
    if not (text.isascii() and text.isdigit()) or len(text) > 7:
        raise _bad(name, text)
    value = int(text)
    if not low <= value <= high:
        raise _bad(name, text)
    return value


def paginate(
    dbsession,
    query: Select,
    listing: Listing,
    order: Mapping[str, Any],
    *,
    tiebreak: Any,
    scalars: bool = True,
    last_page_past_the_end: bool = False,
) -> Page:
    """Run ``query`` for ``listing``'s page, ordered by ``order[listing.sort]``.

    ``tiebreak`` (a unique column) makes the order total, so a row never
    appears on two pages nor on none. A page past the end is empty, with
    the true total, so the page can say so and link back; with
    ``last_page_past_the_end`` it is the last page instead (the returned
    ``Page.listing`` says which).
    """
    column = order[listing.sort]
    direction = (column.desc() if listing.descending else column.asc()).nulls_last()
    tie = tiebreak.desc() if listing.descending else tiebreak.asc()
    total = dbsession.scalar(
        select(func.count()).select_from(query.order_by(None).subquery())
    )
    last = max(1, -(-(total or 0) // listing.per))
    if last_page_past_the_end and listing.page > last:
        listing = dataclasses.replace(listing, page=last)
    paged = query.order_by(direction, tie).limit(listing.per).offset(listing.offset)
    rows = dbsession.scalars(paged) if scalars else dbsession.execute(paged)
    return Page(items=list(rows), total=total or 0, listing=listing)
