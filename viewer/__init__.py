"""Watching the twin: URDF arm model and FK (PyBullet), the live viewer, renders and plots of sessions."""
