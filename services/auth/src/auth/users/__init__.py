"""Accounts: registration and password login (OTP, refresh and profiles arrive with issue 3)."""
