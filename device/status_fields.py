"""What each field of the device's once-a-second status line means: one glossary for ``--help`` (and kept equal to
README's by ``tests/test_first_hour.py``)."""

from __future__ import annotations

import textwrap

# In the order the line prints them; the last group appears only for some policies or states.
STATUS_FIELDS: dict[str, str] = {
    "rate": "frames/s read from the arm",
    "load": "sent / measured samples (1.0 = every sample sent)",
    "mse": "mean squared error of the twin as displayed vs the arm over the last second, deg²",
    "avg_mse": "the same since the start",
    "k": "mean samples per send",
    "H": "prediction horizon the server honours",
    "rtt": "rtt=p50/p99 = sample sent -> its prediction back, ms",
    "lost": "frames missing in the sequence",
    "crc": "corrupt frames",
    "dropped": "sends the socket refused (no server)",
    "link": "server reachable (up/DOWN)",
    "port": "port=DOWN: the serial port is gone; the device reopens it when it returns",
    "ESTOP": "the arm's frames carry its emergency-stop flag (shown, never acted on)",
    "REC": "REC=STOPPED: the --record file stopped (disk full, write error); the loop goes on",
    "resent": "samples sent again because their prediction never came back (policies with resend)",
    "lam": "KC-TD3's Lagrange multiplier λ (how much error costs against load)",
    "mirror_avg_mse": "KC-TD3's running MSE of its own mirror of the twin (what its state sees), "
                      "shown /eps = against its constraint ε",
}


def status_help(width: int = 104) -> str:
    """The glossary as one wrapped paragraph for an argparse epilog."""
    parts = [text if text.startswith(f"{name}=") else f"{name} = {text}" for name, text in STATUS_FIELDS.items()]
    return textwrap.fill("status line, once a second: " + "; ".join(parts) + ".", width=width, break_on_hyphens=False)
