"""Tenant members: OWNER and ADMIN invite and manage (seed 002)."""
