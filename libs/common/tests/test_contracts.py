"""Event contracts: the snapshot catches any change, the envelope round-trips, types are versioned."""

import pytest
from common.contracts import EventEnvelope, all_topics, all_types, split_type, topic_for
from common.contracts.auth.v1 import UserRegisteredV1
from common.contracts.snapshot import SNAPSHOT, render
from pydantic import ValidationError


def test_contract_snapshot_is_current():
    assert SNAPSHOT.read_text() == render(), (
        "an event contract changed: if intended, run "
        "`.venv/bin/python -m common.contracts.snapshot --write` and review the diff "
        "(a breaking change needs a new version, V<n+1>, beside the old one)"
    )


def test_every_contract_type_is_versioned_and_maps_to_its_family_topic():
    for event_type in all_types():
        base, version = split_type(event_type)
        assert version >= 1 and base.count(".") == 2
    assert topic_for("auth.user.registered.v1") == "auth.user"
    assert "auth.user" in all_topics()


def test_envelope_round_trips_and_refuses_an_unversioned_type():
    payload = UserRegisteredV1(
        user_id="u", tenant_id="t", name="Ann", role="OWNER", personal_tenant=True
    )
    env = EventEnvelope[UserRegisteredV1](
        source="/switchboard/auth", type="auth.user.registered.v1", subject="u", data=payload
    )
    wire = env.model_dump_json(by_alias=True)
    assert '"userId":"u"' in wire and '"specversion":"1.0"' in wire
    back = EventEnvelope[UserRegisteredV1].model_validate_json(wire)
    assert back.data == payload and back.id == env.id
    with pytest.raises(ValidationError):
        EventEnvelope[UserRegisteredV1](
            source="/x", type="auth.user.registered", subject="u", data=payload
        )
