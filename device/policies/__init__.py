"""Sampling policies: the interface (``base``), the families (``static``, ``event``, ``kctd3``) and their
registry (``registry.parse_policy``)."""
