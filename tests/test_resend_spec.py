"""``resend=1`` is honoured or refused, never silently ignored (issue 10, defect 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.policies.base import PolicySpecError
from device.policies.registry import parse_policy


def test_resend_without_a_compiled_kernel_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    # The check comes before the predictor is loaded: no model file is needed to see the refusal.
    with pytest.raises(PolicySpecError, match="resend=1 needs a predictor with a compiled trigger kernel"):
        parse_policy(f"dead-reckoning:delta=0.1,pred=learned:{tmp_path / 'model.npz'},resend=1")


@pytest.mark.parametrize("spec", ["dead-reckoning:delta=0.1,pred=kinematic,resend=1",
                                  "send-on-delta:delta=0.1,resend=1", "static:k=5,resend=1"])
def test_resend_with_a_kernel_is_honoured(spec: str) -> None:
    policy = parse_policy(spec)
    assert policy.acks is not None and "resend=1" in policy.spec()
