"""Wire conventions: camelCase models, the success envelope, pagination."""

from __future__ import annotations

import math
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

T = TypeVar("T")


class CamelModel(BaseModel):
    """Output model: snake_case in Python, camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class InputModel(CamelModel):
    """Input model: strict about unknown fields, so `role` or `tenantId` can't sneak in."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=True,
    )


class Envelope(BaseModel, Generic[T]):
    success: bool = True
    data: T


def ok(data: Any) -> dict[str, Any]:
    """The success envelope."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True)
    return {"success": True, "data": data}


class PageParams(BaseModel):
    page: int = 1
    limit: int = 20

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def _page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PageParams:
    return PageParams(page=page, limit=limit)


Pagination = Annotated[PageParams, Depends(_page_params)]


class Page(CamelModel, Generic[T]):
    items: list[T]
    page: int
    limit: int
    total: int
    total_pages: int


def paginate(items: list[Any], total: int, params: PageParams) -> dict[str, Any]:
    return {
        "items": items,
        "page": params.page,
        "limit": params.limit,
        "total": total,
        "totalPages": math.ceil(total / params.limit) if total else 0,
    }
