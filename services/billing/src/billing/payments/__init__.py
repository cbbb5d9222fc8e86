"""Stripe top-ups: a PaymentIntent per top-up, and the signed webhook that credits the ledger
exactly once per payment state, whatever the redeliveries and their order."""
