"""Credit accounts: opened on registration, read by their tenant."""
