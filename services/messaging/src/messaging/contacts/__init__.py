"""Contacts: a tenant's address book, CRUD and CSV import/export (issue 5, seeds 000 and 002)."""
