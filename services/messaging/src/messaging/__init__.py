"""Switchboard messaging service: contacts, SMS/WhatsApp messages, conversations, templates, provider webhooks, number orders."""
