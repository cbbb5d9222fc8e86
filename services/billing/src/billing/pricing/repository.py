import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import PricingRule

SCOPE_INDEX = "ux_pricing_rules_scope"
SCOPE_FIELDS = ("country", "route", "provider", "service")


class DuplicateScope(Exception):
    """Another rule already has this kind and scope (unique index ux_pricing_rules_scope)."""


@dataclass(frozen=True)
class CatalogCost:
    kind: str
    country: str
    route: str | None
    provider: str | None
    service: str | None
    cost_minor: int


# One statement for a whole catalogue. The conflict target is the scope index's expressions, so
# an existing rule of the same scope is found however it was created; only margin rules take
# the new cost (a fixed price ignores it), and an unchanged cost is not rewritten.
_UPSERT_COSTS = text(
    """
    INSERT INTO pricing_rules (id, kind, country, route, provider, service, currency, cost_minor, margin_bp)
    SELECT gen_random_uuid(), u.kind, u.country, u.route, u.provider, u.service, :currency, u.cost, :margin
      FROM unnest(CAST(:kinds AS text[]), CAST(:countries AS text[]), CAST(:routes AS text[]),
                  CAST(:providers AS text[]), CAST(:services AS text[]), CAST(:costs AS bigint[]))
           AS u(kind, country, route, provider, service, cost)
    ON CONFLICT (kind, coalesce(country, ''), coalesce(route, ''), coalesce(provider, ''),
                 coalesce(service, ''))
    DO UPDATE SET cost_minor = EXCLUDED.cost_minor, updated_at = now()
     WHERE pricing_rules.margin_bp IS NOT NULL
       AND pricing_rules.cost_minor IS DISTINCT FROM EXCLUDED.cost_minor
    RETURNING (xmax = 0) AS inserted
    """
)


def _is_scope_conflict(exc: IntegrityError) -> bool:
    return SCOPE_INDEX in str(exc.orig)


class PricingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, rule_id: uuid.UUID, *, for_update: bool = False) -> PricingRule | None:
        return await self.session.get(PricingRule, rule_id, with_for_update=for_update)

    async def by_scope(self, kind: str, scope: dict[str, str | None]) -> PricingRule | None:
        stmt = select(PricingRule).where(PricingRule.kind == kind)
        for field in SCOPE_FIELDS:
            stmt = stmt.where(func.coalesce(getattr(PricingRule, field), "") == (scope.get(field) or ""))
        return await self.session.scalar(stmt)

    async def applicable(self, kind: str, match: dict[str, str]) -> list[PricingRule]:
        """The active rules of `kind` that apply to `match`: each scope field equal or left open."""
        stmt = select(PricingRule).where(PricingRule.kind == kind, PricingRule.active.is_(True))
        for field, value in match.items():
            column = getattr(PricingRule, field)
            stmt = stmt.where((column == value) | column.is_(None))
        return list(await self.session.scalars(stmt))

    async def find(
        self, *, filters: dict[str, str | bool | None], offset: int, limit: int
    ) -> tuple[list[PricingRule], int]:
        stmt = select(PricingRule)
        for field, value in filters.items():
            if value is not None:
                stmt = stmt.where(getattr(PricingRule, field) == value)
        total = await self.session.scalar(select(func.count()).select_from(stmt.subquery()))
        order = [PricingRule.kind] + [getattr(PricingRule, f).asc().nulls_first() for f in SCOPE_FIELDS]
        rows = await self.session.scalars(stmt.order_by(*order, PricingRule.id).offset(offset).limit(limit))
        return list(rows), int(total or 0)

    async def add(self, rule: PricingRule) -> None:
        """Insert; DuplicateScope when the scope is taken (a savepoint keeps the session usable)."""
        try:
            async with self.session.begin_nested():
                self.session.add(rule)
        except IntegrityError as exc:
            if _is_scope_conflict(exc):
                raise DuplicateScope from exc
            raise
        await self.session.refresh(rule)

    async def update(self, rule: PricingRule, changes: dict[str, object]) -> None:
        """Apply `changes` to `rule`; DuplicateScope when its new scope is taken. (The changes are
        made inside the savepoint: opening one flushes whatever is pending.)"""
        try:
            async with self.session.begin_nested():
                for field, value in changes.items():
                    setattr(rule, field, value)
        except IntegrityError as exc:
            if _is_scope_conflict(exc):
                raise DuplicateScope from exc
            raise
        await self.session.refresh(rule)

    async def delete(self, rule_id: uuid.UUID) -> bool:
        result = await self.session.execute(delete(PricingRule).where(PricingRule.id == rule_id))
        return bool(result.rowcount)

    async def upsert_costs(self, costs: list[CatalogCost], *, currency: str, margin_bp: int) -> tuple[int, int]:
        """Set the cost of every matching margin rule, creating a margin rule for a scope that has
        none. Returns (created, updated)."""
        if not costs:
            return 0, 0
        rows = await self.session.execute(
            _UPSERT_COSTS,
            {
                "currency": currency,
                "margin": margin_bp,
                "kinds": [c.kind for c in costs],
                "countries": [c.country for c in costs],
                "routes": [c.route for c in costs],
                "providers": [c.provider for c in costs],
                "services": [c.service for c in costs],
                "costs": [c.cost_minor for c in costs],
            },
        )
        inserted = [r.inserted for r in rows]
        return sum(inserted), len(inserted) - sum(inserted)
