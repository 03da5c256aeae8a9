"""KC-TD3's CVaR tail constraint (``--tail-constraint cvar``): the measure, the criterion, training, recalibration,
the online learner and the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from device.link_emulation import LinkSpec
from device.policies.base import PolicySpecError
from device.policies.kctd3.checkpoint import cvar, load_checkpoint, tail_constraint, tail_ratio
from device.policies.kctd3.online import OnlineLearner
from device.policies.kctd3.policy import KCTD3Policy
from lab.kctd3.calibrate import recalibrate, tail_ok
from lab.kctd3.config import TrainConfig
from lab.kctd3.train import random_checkpoint, train
from tests.conftest import Proc, synthetic_session
from twin.session import write_session

torch.set_num_threads(1)


def test_cvar_is_the_mean_of_the_worst_share() -> None:
    v = np.arange(1.0, 11.0)  # 1 .. 10, shuffled: order must not matter
    np.random.default_rng(0).shuffle(v)
    assert cvar(v, 0.9) == 10.0 and cvar(v, 0.8) == 9.5 and cvar(v, 0.5) == 8.0
    assert cvar(v, 0.99) == 10.0  # at least one value
    assert cvar(np.zeros(0), 0.9) == 0.0
    assert tail_ratio(v, 4.0, "cvar", 0.8, 123.0) == pytest.approx(9.5 / 4.0)  # the chance bound plays no part
    assert tail_ratio(v, 4.0, "chance", 0.0, 0.5) == pytest.approx(0.6 / 0.5)  # 6 of 10 windows above ε


def test_the_two_constraints_judge_differently() -> None:
    eps = 0.002
    few_bad = np.r_[np.full(95, 0.5 * eps), np.full(5, 3 * eps)]  # 5 % of windows over ε, but far over
    many_mild = np.r_[np.full(80, 0.5 * eps), np.full(20, 1.05 * eps)]  # 20 % over ε, each only just
    chance = TrainConfig(eps=eps, tail_max=0.1)
    cv = TrainConfig(eps=eps, tail_constraint="cvar", cvar_alpha=0.9)
    link = LinkSpec()

    def m(w: np.ndarray) -> dict[str, object]:
        return {"tail_fraction": float(np.mean(w > eps)), "windows": w}

    assert tail_ok(m(few_bad), chance, link) and not tail_ok(m(few_bad), cv, link)
    assert not tail_ok(m(many_mild), chance, link) and not tail_ok(m(many_mild), cv, link)
    assert tail_ok(m(np.r_[np.full(80, 0.5 * eps), np.full(20, 0.99 * eps)]), cv, link)


def test_checkpoint_tail_constraint_key() -> None:
    assert tail_constraint({}) == ("chance", 0.0)  # checkpoints before the option
    assert tail_constraint({"tail_constraint": {"kind": "cvar", "alpha": 0.95}}) == ("cvar", 0.95)
    with pytest.raises(PolicySpecError, match="tail constraint"):
        tail_constraint({"tail_constraint": {"kind": "median"}})


def test_online_learner_follows_the_checkpoints_cvar_constraint(tmp_path: Path) -> None:
    path = random_checkpoint(tmp_path / "p.pt", eps=0.002, seed=1)
    ck = load_checkpoint(path)
    # 5 % of windows far over ε: within a lax chance bound (λ falls), over the CVaR bound (λ rises).
    windows = [0.5 * 0.002] * 95 + [3 * 0.002] * 5
    ck["meta"].update({"tail_max": 0.2, "cost_target": 0.8})
    chance = KCTD3Policy(path, checkpoint=ck)
    lam0 = chance.lam
    OnlineLearner(chance, lr=0.2).step(windows)
    assert chance.lam < lam0
    ck["meta"]["tail_constraint"] = {"kind": "cvar", "alpha": 0.9}
    cv = KCTD3Policy(path, checkpoint=ck)
    OnlineLearner(cv, lr=0.2).step(windows)
    assert cv.lam > lam0


def test_short_training_and_recalibration_with_cvar(tmp_path: Path) -> None:
    sessions = [synthetic_session(seconds=2.0, seed=s) for s in (0, 1)]
    cfg = TrainConfig(eps=0.002, episodes=4, warmup_episodes=2, episode_s=1.0, updates_per_episode=10,
                      critic_warmup=10, bc_steps=10, bisect_steps=2, batch=32, tail_constraint="cvar",
                      cvar_alpha=0.8)
    meta, curves = train(sessions, cfg, tmp_path / "c.pt", progress=False)
    assert meta["tail_constraint"] == {"kind": "cvar", "alpha": 0.8} and meta["tail_max"] == 1.0
    assert cfg.tail_table == []  # no static search: the CVaR bound is ε itself
    assert len(curves) == 4 and np.array(meta["lambda_grid"]["values"]).shape == (3, 3)
    # Recalibrating with CVaR instead of an inert chance bound (every window may exceed ε) solves each λ for the
    # mean and the CVaR: the bisection can only end higher, and where the CVaR binds it does.
    grids = {}
    for kind in ("chance", "cvar"):
        path = random_checkpoint(tmp_path / f"r_{kind}.pt", eps=0.002, seed=2)
        assert load_checkpoint(path)["meta"].get("tail_constraint") is None
        cfg_r = TrainConfig(eps=0.002, bisect_steps=4, tail_constraint=kind, tail_max=1.0 if kind == "chance" else None)
        again = recalibrate(sessions, path, cfg_r)
        stored = load_checkpoint(path)["meta"]
        assert stored["tail_constraint"] == again["tail_constraint"] == stored["recalibrated"]["tail_constraint"]
        grids[kind] = np.array(stored["lambda_grid"]["values"])
    assert stored["tail_constraint"] == {"kind": "cvar", "alpha": 0.9}
    assert (grids["cvar"] >= grids["chance"]).all() and (grids["cvar"] > grids["chance"]).any()


def test_train_cli_refuses_mixed_tail_options(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    write_session(path, synthetic_session(seconds=2.0))
    for extra, msg in ((["--tail-constraint", "cvar", "--tail-max", "0.1"], "--tail-max/--tail-margin"),
                       (["--cvar-alpha", "1.5"], "--cvar-alpha must be in")):
        code, _, err = Proc("train", str(path), "--constraint", "0.002", "-o", str(tmp_path / "x.pt"),
                               *extra).finish(timeout=120)
        assert code == 2 and msg in err, err
    assert not (tmp_path / "x.pt").exists()


def test_recalibrate_keeps_the_checkpoints_tail_constraint(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    write_session(path, synthetic_session(seconds=2.0))
    ck_path = random_checkpoint(tmp_path / "c.pt", eps=0.002, seed=1)
    ck = load_checkpoint(ck_path)
    ck["meta"]["tail_constraint"] = {"kind": "cvar", "alpha": 1.5}
    with pytest.raises(PolicySpecError, match="alpha in"):
        KCTD3Policy(ck_path, checkpoint=ck)  # a malformed constraint is refused at load
    recal = ("train", str(path), "--constraint", "0.002", "--recalibrate", "-o", str(ck_path), "--bisect-steps", "1")
    code, _, err = Proc(*recal, "--tail-constraint", "cvar", "--cvar-alpha", "0.8").finish(timeout=300)
    assert code == 0, err
    code, _, err = Proc(*recal).finish(timeout=300)  # no tail flags: the checkpoint's CVaR and α stay
    assert code == 0, err
    assert load_checkpoint(ck_path)["meta"]["tail_constraint"] == {"kind": "cvar", "alpha": 0.8}
    code, _, err = Proc(*recal, "--tail-constraint", "chance", "--cvar-alpha", "0.8").finish(timeout=120)
    assert code == 2 and "--cvar-alpha applies" in err
