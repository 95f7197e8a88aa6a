"""qwenhost: DashScope's OpenAI-compatible chat API, served from local GGUF models through llama.cpp."""

__version__ = "0.1.0"
