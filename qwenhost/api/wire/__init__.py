"""The wire side of both dialects: one mapping of request fields onto core types (request.py), with the
range rules as a table (ranges.py)."""
