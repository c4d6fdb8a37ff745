"""Shared foundation."""
