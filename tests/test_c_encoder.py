"""The C header (firmware_interfaces/firmware/armtwin_frame.h) must produce exactly the bytes of codec.encode_frame.

tests/c/encode_frames.c is compiled with the system C compiler; the test is skipped only if there is none.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from firmware_interfaces.codec import (
    MAX_JOINTS,
    MAX_WIRE_FRAME,
    FrameDecoder,
    encode_frame,
)

REPO = Path(__file__).resolve().parents[1]
C_SOURCE = REPO / "tests" / "c" / "encode_frames.c"
HEADER = REPO / "firmware_interfaces" / "firmware" / "armtwin_frame.h"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
U32_MAX = 2**32 - 1

Sample = tuple[int, int, int, tuple[int, ...]]  # seq, t_us, flags, angles_urad


def _compiler() -> str | None:
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def encoder_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc/gcc/clang) on PATH; cannot check the C header against the Python codec")
    exe = tmp_path_factory.mktemp("c_encoder") / "encode_frames"
    cmd = [cc, *CFLAGS, "-o", str(exe), str(C_SOURCE), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"compile failed: {' '.join(cmd)}\n{proc.stderr}"
    return exe


def _run(exe: Path, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(exe), *args], input=stdin, capture_output=True, check=False, timeout=60)


def _lines(samples: list[Sample]) -> bytes:
    return b"".join(
        f"{seq} {t_us} {flags} {len(angles)} {' '.join(map(str, angles))}\n".encode()
        for seq, t_us, flags, angles in samples
    )


def _random_samples(rng: random.Random, count: int) -> list[Sample]:
    near_wrap = [0, 1, 2, U32_MAX - 1, U32_MAX, 2**31 - 1, 2**31]
    extremes = [I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX]
    samples: list[Sample] = []
    for k in range(count):
        n = rng.choice([1, 6, 7, MAX_JOINTS]) if k % 3 == 0 else rng.randint(1, MAX_JOINTS)
        angles = []
        for _ in range(n):
            r = rng.random()
            if r < 0.2:
                angles.append(rng.choice(extremes))
            elif r < 0.4:
                angles.append(rng.randint(I32_MIN, I32_MAX))
            elif r < 0.6:  # bytes with many 0x00 exercise the COBS blocks
                angles.append(rng.choice([0, 0x100, 0x10000, 0x1000000, -0x1000000, 0x7F000000]))
            else:  # realistic joint angles, +-pi rad
                angles.append(rng.randint(-3_141_593, 3_141_593))
        seq = rng.choice(near_wrap) if rng.random() < 0.3 else rng.getrandbits(32)
        t_us = rng.choice(near_wrap) if rng.random() < 0.3 else rng.getrandbits(32)
        flags = rng.choice([0, 1, 2, 3, 0xFF]) if rng.random() < 0.5 else rng.getrandbits(8)
        samples.append((seq, t_us, flags, tuple(angles)))
    return samples


def test_crc_check_value(encoder_exe: Path) -> None:
    proc = _run(encoder_exe, b"", "--crc-check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == "29b1"


def test_known_frame(encoder_exe: Path) -> None:
    proc = _run(encoder_exe, b"1 2 0 1 0\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == encode_frame(1, 2, [0]) == bytes.fromhex("020102010101020201010201010101036ac900")


def test_c_bytes_equal_python_bytes(encoder_exe: Path) -> None:
    samples = _random_samples(random.Random(20240601), 400)
    proc = _run(encoder_exe, _lines(samples))
    assert proc.returncode == 0, proc.stderr
    expected = [encode_frame(seq, t_us, angles, flags) for seq, t_us, flags, angles in samples]
    assert proc.stdout == b"".join(expected)
    # Also frame by frame, so a mismatch is easy to locate.
    got = proc.stdout.split(b"\x00")[:-1]
    assert [g + b"\x00" for g in got] == expected
    assert max(len(e) for e in expected) <= MAX_WIRE_FRAME
    assert len(encode_frame(0, 0, [0] * MAX_JOINTS)) == MAX_WIRE_FRAME == 143


def test_c_stream_decodes_in_random_chunks(encoder_exe: Path) -> None:
    rng = random.Random(7)
    samples = _random_samples(rng, 300)
    proc = _run(encoder_exe, _lines(samples))
    assert proc.returncode == 0, proc.stderr
    stream = proc.stdout
    for _ in range(5):
        decoder = FrameDecoder()
        frames = []
        pos = 0
        while pos < len(stream):
            size = rng.choice([1, 2, 3, rng.randint(1, 64), rng.randint(1, 2000)])
            frames += decoder.feed(stream[pos : pos + size])
            pos += size
        assert [(f.seq, f.t_us, f.flags, f.angles_urad) for f in frames] == samples
        assert decoder.stats.frames_ok == len(samples)
        assert decoder.stats.bad_frames == 0
        assert decoder.stats.bytes_skipped == 0


@pytest.mark.parametrize("n", [0, MAX_JOINTS + 1, 64])
def test_invalid_joint_count_returns_zero(encoder_exe: Path, n: int) -> None:
    line = f"5 6 0 {n} {' '.join(['1'] * n)}\n".encode()
    proc = _run(encoder_exe, line)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)  # 3: armtwin_encode_frame returned 0
    assert proc.stdout == b""
    assert b"returned 0" in proc.stderr


@pytest.mark.parametrize("n", [1, 6, MAX_JOINTS])
def test_output_capacity_is_checked(encoder_exe: Path, n: int) -> None:
    line = f"5 6 0 {n} {' '.join(['-7'] * n)}\n".encode()
    need = len(encode_frame(5, 6, [-7] * n))
    assert need == 15 + 4 * n
    ok = _run(encoder_exe, line, "--cap", str(need))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == encode_frame(5, 6, [-7] * n)
    short = _run(encoder_exe, line, "--cap", str(need - 1))
    assert short.returncode == 3
    assert short.stdout == b""


def test_rad_to_urad_rounds_and_saturates(encoder_exe: Path) -> None:
    rng = random.Random(3)
    values = [rng.uniform(-10.0, 10.0) for _ in range(300)] + [rng.uniform(-2147.0, 2147.0) for _ in range(100)]
    values += [0.0, -0.0, 1e-7, -1e-7, math.pi, -math.pi, 2147.483646, -2147.483647, 2147.4836469]
    values = [v for v in values if abs(v * 1e6 - math.floor(v * 1e6) - 0.5) > 1e-6]  # no exact .5 ties
    saturating = [2147.4836475, 2147.5, 1e9, math.inf, -2147.4836485, -2147.49, -1e9, -math.inf]
    text = " ".join(repr(v) for v in values + saturating) + " nan\n"
    proc = _run(encoder_exe, text.encode(), "--rad-to-urad")
    assert proc.returncode == 0, proc.stderr
    got = [int(x) for x in proc.stdout.split()]
    # Away from .5 ties lround (C) and numpy.rint (Python side of the project) agree.
    expected = [int(np.rint(v * 1e6)) for v in values]
    expected += [I32_MAX] * 4 + [I32_MIN] * 4 + [0]
    assert got == expected
    # Exact .5 ties: lround rounds away from zero where numpy.rint rounds to even (documented in FRAME_SPEC.md).
    ties = [0.5e-6, -2.5e-6, 1.5e-6]
    assert [t * 1e6 for t in ties] == [0.5, -2.5, 1.5]  # the products really are ties in binary64
    proc = _run(encoder_exe, " ".join(map(repr, ties)).encode(), "--rad-to-urad")
    assert [int(x) for x in proc.stdout.split()] == [1, -3, 2]


def test_header_compiles_as_cxx(tmp_path: Path) -> None:
    """The sketch includes the header from C++; it must compile warning-free there too."""
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    src = tmp_path / "use_header.cpp"
    src.write_text(
        f'#include "{HEADER}"\n'
        "size_t f(uint8_t *o) { const int32_t a[2] = {armtwin_rad_to_urad(1.5f), -2};\n"
        "  return armtwin_encode_frame(o, ARMTWIN_MAX_WIRE_FRAME, 1u, 2u, ARMTWIN_FLAG_ESTOP, a, 2); }\n"
    )
    proc = subprocess.run(
        [cxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-c", str(src), "-o", str(tmp_path / "use_header.o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
