"""Every event contract, by type string. Consumers look payload models up here."""

from __future__ import annotations

from pydantic import BaseModel

from common.contracts.envelope import TYPE_RE, topic_for

_REGISTRY: dict[str, type[BaseModel]] = {}


def event(event_type: str):
    """Class decorator: register a payload model under its versioned type string."""

    def wrap(cls: type[BaseModel]) -> type[BaseModel]:
        register(event_type, cls)
        return cls

    return wrap


def register(event_type: str, model: type[BaseModel]) -> None:
    if not TYPE_RE.match(event_type):
        raise ValueError(f"bad event type {event_type!r}: want <service>.<aggregate>.<verb>.v<n>")
    existing = _REGISTRY.get(event_type)
    if existing is not None and existing is not model:
        raise ValueError(f"event type {event_type} registered twice")
    _REGISTRY[event_type] = model
    model.__event_type__ = event_type  # type: ignore[attr-defined]


def model_for(event_type: str) -> type[BaseModel] | None:
    return _REGISTRY.get(event_type)


def type_of(payload: BaseModel | type[BaseModel]) -> str:
    return payload.__event_type__  # type: ignore[union-attr]


def all_types() -> dict[str, type[BaseModel]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def all_topics() -> list[str]:
    """Every topic the platform's contracts name (the DLQ topics are `<topic>.dlq`)."""
    return sorted({topic_for(t) for t in all_types()})


def _load_all() -> None:
    # Importing the contract modules registers them.
    import common.contracts.auth.v1  # noqa: F401
    import common.contracts.auth.v2  # noqa: F401
    import common.contracts.billing.v1  # noqa: F401
    import common.contracts.messaging.v1  # noqa: F401
    import common.contracts.provider.v1  # noqa: F401
