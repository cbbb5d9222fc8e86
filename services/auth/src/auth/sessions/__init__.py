"""Login sessions: a short access JWT plus an opaque refresh token rotated on every use."""
