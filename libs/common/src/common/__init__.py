"""Shared code for every Switchboard service (see docs/architecture.md)."""
