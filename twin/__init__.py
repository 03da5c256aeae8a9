"""The digital model shared by device and server: predictors, display rule, metrics, schema, sessions."""
