"""KC-TD3 on the device: the policy (numpy inference), its expert knowledge and the online λ learner."""
