"""gateway.testing"""
