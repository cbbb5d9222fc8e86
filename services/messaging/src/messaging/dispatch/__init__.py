"""Sending outbound SMS: billing's answers, the OTP lane, the dispatcher loops (worker process)."""
