"""Studies that use the registered components end to end (seed 001 section 3.2: small-data augmentation)."""
