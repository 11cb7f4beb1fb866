"""Benchmark harness: hubproxy against a plain aiohttp passthrough, both in front of a fast fake upstream."""
