"""``--config armtwin.toml``: the verb's table supplies defaults, flags override them, bad files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from armtwin.cli import main, parse_args
from tests.conftest import REPO


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "armtwin.toml"
    path.write_text(text)
    return str(path)


def test_file_gives_defaults_and_flags_win(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[server]\nbind = "tcp://127.0.0.1:7000"\npredictor = "linear"\n'
                '[device]\nport = "serial:A1"\nserver = "edge:5555"\nrecord = "s.mcap"\nduration = 5\n'
                'joint-names = "a,b"\n[view]\nsub = "tcp://edge:5556"\n')
    _, a = parse_args(["server", "--config", cfg])
    assert a.bind == "tcp://127.0.0.1:7000" and a.predictor == "linear" and a.pub == "tcp://*:5556"
    _, a = parse_args(["server", f"--config={cfg}", "--predictor", "hold"])
    assert a.predictor == "hold", "the command line overrides the file"
    _, a = parse_args(["device", "--config", cfg])  # --port is required, and the file gives it
    assert a.port == "serial:A1" and a.record == Path("s.mcap") and a.duration == 5.0 and a.joint_names == "a,b"
    _, a = parse_args(["device", "--config", cfg, "--port", "/dev/ttyACM1"])
    assert a.port == "/dev/ttyACM1"
    _, a = parse_args(["view", "--config", cfg])
    assert a.sub == ["tcp://edge:5556"]


@pytest.mark.parametrize(("text", "message"), [
    ('[server]\nbnid = "x"\n', "has no option 'bnid'; valid: bind"),
    ("[server\n", "not valid TOML"),
    ('[device]\nduration = "soon"\n', "duration = 'soon'"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                               message: str) -> None:
    assert main(["server" if "server" in text else "device", "--config", write(tmp_path, text)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file_and_the_example_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["server", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err
    example = str(REPO / "armtwin.example.toml")
    for verb in ("server", "device", "view"):
        parse_args([verb, "--config", example])  # every key of the shipped example is a real option
