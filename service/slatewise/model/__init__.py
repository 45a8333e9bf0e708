"""The model path: vLLM engine host, prompt building, slate composition."""
