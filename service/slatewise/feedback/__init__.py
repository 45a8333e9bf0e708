"""User feedback events: where they are kept once acknowledged (storage only)."""
