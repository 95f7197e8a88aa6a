"""The native DashScope protocol (``/api/v1/services/aigc/…/generation``): a second dialect of the chat route."""
