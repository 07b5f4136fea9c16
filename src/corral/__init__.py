"""Corral: a self-hosted runtime for sandboxed, event-driven, serverless Python agents."""

__version__ = "0.1.0"
