"""Password reset: request (a token sent by event for messaging to deliver), confirm."""
