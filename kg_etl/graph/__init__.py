"""The graph stage: schema, batched idempotent writer, queries and the local Bolt server."""
