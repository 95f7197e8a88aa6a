"""qwenhost on Ray Serve: an HTTP ingress in front of N engine replicas, routed by prompt prefix (docs/scale-out.md)."""
