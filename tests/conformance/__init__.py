"""The official protocol conformance suites, run against test-only apps (see `runner`)."""
