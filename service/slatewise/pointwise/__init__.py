"""The pointwise path: score each candidate alone, then pick a constrained, diversified top-K."""
