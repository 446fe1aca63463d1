"""gateway.knowledge"""
