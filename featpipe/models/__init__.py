"""Torch re-implementations of published networks, loading their official weight files."""
