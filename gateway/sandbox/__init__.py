"""gateway.sandbox"""
