"""Twin server: one session per device, predictions back, twin states on PUB."""
