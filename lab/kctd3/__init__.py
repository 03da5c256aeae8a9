"""KC-TD3 training and calibration (torch); the policy it trains runs from ``device.policies.kctd3``."""
