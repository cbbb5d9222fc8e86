"""Phone sign-in with one-time codes (seed 004): send-otp, verify-otp."""
