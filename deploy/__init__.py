"""Deployment files (Kubernetes manifests, image) and the tools that check them."""
