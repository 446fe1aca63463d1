"""gateway.api"""
