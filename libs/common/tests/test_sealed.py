"""Short codes (kept as an HMAC) and sealed secrets in events: only the holders of a key open
them, keys rotate, and production refuses the local key."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from common.sealed import (
    LOCAL_SEAL_KEY,
    SealSettings,
    Unsealable,
    code_hash,
    code_matches,
    new_code,
    seal,
    unseal,
)
from cryptography.fernet import Fernet
from pydantic import ValidationError


def test_a_sealed_code_opens_only_with_a_key_that_sealed_it_and_never_shows_the_code():
    key = Fernet.generate_key().decode()
    sealed = seal([key], "482915")
    assert "482915" not in sealed and seal([key], "482915") != sealed  # a fresh IV each time
    assert unseal([key], sealed) == "482915"
    with pytest.raises(Unsealable):
        unseal([Fernet.generate_key().decode()], sealed)
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(Unsealable):
        unseal([key], tampered)


def test_keys_rotate_the_first_seals_and_every_one_opens():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_before = seal([old], "111222")
    assert unseal([new, old], sealed_before) == "111222"  # in flight across the rotation
    sealed_after = seal([new, old], "333444")
    assert unseal([new], sealed_after) == "333444"  # the old key can then be retired
    with pytest.raises(Unsealable):
        unseal([old], sealed_after)


def test_settings_refuse_no_key_a_malformed_key_and_in_production_the_local_key():
    with pytest.raises(ValidationError):
        SealSettings(otp_seal_keys=[])
    with pytest.raises(ValidationError):
        SealSettings(otp_seal_keys=["not-a-fernet-key"])
    with pytest.raises(ValueError, match="SB_OTP_SEAL_KEYS"):
        SealSettings(otp_seal_keys=[Fernet.generate_key().decode(), LOCAL_SEAL_KEY]).check_production_seal()
    SealSettings(otp_seal_keys=[Fernet.generate_key().decode()]).check_production_seal()


def test_codes_are_six_digits_and_kept_as_a_salted_peppered_hmac():
    codes = {new_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 150
    stored = code_hash("pepper", "challenge-1", "123456")
    # The stored form of challenges already in the database: HMAC-SHA256("salt:code").
    assert stored == hmac.new(b"pepper", b"challenge-1:123456", hashlib.sha256).hexdigest()
    assert code_matches("pepper", "challenge-1", "123456", stored)
    assert not code_matches("pepper", "challenge-2", "123456", stored)  # salted by the challenge
    assert not code_matches("other", "challenge-1", "123456", stored)  # keyed by the pepper
    assert not code_matches("pepper", "challenge-1", "123457", stored)
