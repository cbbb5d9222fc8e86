"""Platform administration: users across tenants, signing key rotation (seed 001)."""
