"""gateway.manifests"""
