"""End-to-end tests against a real ecolink serve with the local runtime."""
