"""Frontends: trace framework models into the IR."""
