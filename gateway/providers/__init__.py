"""gateway.providers"""
