"""What keeps the model path from hurting callers: circuit breaker, admission."""
