"""Benchmark scripts: qwenhost against llama.cpp's llama-server on the same machine, in the same run."""
