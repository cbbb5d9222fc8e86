"""Provider webhooks (delivery reports, inbound SMS) and received messages (seed 003
`/api/receive-sms`): stored raw first, then applied by the worker."""
