"""Placeholder, filled in by later modules."""
