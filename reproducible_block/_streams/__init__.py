"""The stream contract: keys, the root seed, and derivation (pure functions of root and key)."""
