"""Conversations: the messages between one of our numbers and one peer number, per tenant."""
