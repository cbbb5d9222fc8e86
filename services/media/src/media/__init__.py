"""Switchboard media service: uploads to S3 and media metadata."""
