"""Declarative gateway for AI assistants."""
