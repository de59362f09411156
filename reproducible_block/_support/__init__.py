"""Plumbing any layer may use: errors, checks, distributed and compile helpers."""
