"""The server's item catalogue: schema, JSONL loading, versioned store."""
