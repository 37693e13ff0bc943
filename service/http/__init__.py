"""HTTP plumbing and security shared by every router: the error family and its handler, the OpenAPI
document and docs pages, keys and scopes, rate limits, idempotency, pagination and health."""
