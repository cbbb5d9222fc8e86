"""Signing keys: Ed25519, published as a JWKS, used to sign access tokens."""
