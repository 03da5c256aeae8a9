"""armtwin command-line entry point: the only package that imports all the others."""
