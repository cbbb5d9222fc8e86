"""Message records: logs, lists and details of SMS (both directions)."""
