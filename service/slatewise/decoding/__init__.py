"""Constrained slate decoding: a pure-Python automaton plus thin vLLM adapters."""
