"""The numbers a tenant owns: senders of its SMS and owners of the SMS sent to them."""
