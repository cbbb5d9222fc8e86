"""Switchboard provider-sync service: provider catalogues, prices and health."""
