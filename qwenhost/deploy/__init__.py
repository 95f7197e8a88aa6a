"""Ways to run qwenhost past one process: the Ray Serve application lives in deploy/ray/ (the qwenhost[ray] extra)."""
