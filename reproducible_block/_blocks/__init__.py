"""The switch: the only code that changes global generators (lock, stack, blocks, seeding)."""
