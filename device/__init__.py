"""Device agent: runs on the arm controller (serial reader, policies, uplink, tracking)."""
