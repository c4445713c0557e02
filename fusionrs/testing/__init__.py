"""Real local stand-ins for external services, for tests, benchmarks and cluster smoke tests."""
