"""Withdrawals: a tenant asks to take credit out (held at once), a platform admin pays it out
(the hold is captured to the `payouts` account) or rejects it (the hold is released)."""
