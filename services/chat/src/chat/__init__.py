"""Switchboard chat service: chats, groups, receipts, typing, presence, WebSocket, status updates."""
