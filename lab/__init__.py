"""The offline lab: simulator, evaluation, KC-TD3 training, predictor fitting. Never imported by device or server."""
