"""Extractors: one module each, sharing the prompt prefix and the retry loop in ``base``."""
