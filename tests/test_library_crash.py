"""Crash safety: SIGKILL a building process at random instants, resume, compare.

Each round forks a child (cheap: no interpreter start-up) that opens or resumes the library,
appends the images it does not hold yet (writing each id to a pipe once its append has
returned, i.e. committed) and finishes. The parent kills it with SIGKILL after a random delay,
then checks that the library opens and holds every image the child reported. Delays spread over
a whole run, so kills land in create, append and finish. Finally the last killed build is
resumed to the end and must have the same content as an uninterrupted build.
``SAMREFINE_CRASH_KILLS`` sets the number of kills (default 25).
"""

import os
import signal
import sys
import time

import numpy as np
import pytest

from samrefine import Proposals
from samrefine.library import LibraryFinishedError, ProposalLibrary, verify_library

N_IMAGES = 50

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _props(i):
    rng = np.random.default_rng(i)
    h, w = 20 + i % 9, 25 + i % 4
    dense = rng.random((1 + i % 5, h, w)) > 0.5
    return Proposals.from_dense(dense, meta={"predicted_iou": rng.random(len(dense))})


def _build(path, out_fd):
    try:
        w = ProposalLibrary.create(path, generator="crash-test", params={"n": N_IMAGES})
    except LibraryFinishedError:  # killed after finish() committed, before it said so
        os.write(out_fd, b"ready\ndone\n")
        return
    os.write(out_fd, b"ready\n")
    for i in range(N_IMAGES):
        if i not in w:
            w.append(i, _props(i))
            os.write(out_fd, b"%d\n" % i)
    os.write(out_fd, b"finishing\n")
    w.finish()
    os.write(out_fd, b"done\n")


def _run_child(path, kill_after=None):
    """Fork a builder; kill it ``kill_after`` s after it is ready. Returns (killed, committed
    ids, done, {line: seconds after ready})."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            _build(str(path), w)
        except BaseException as e:
            os.write(w, f"error {e!r}\n".encode())
            code = 1
        os._exit(code)
    os.close(w)
    reader = os.fdopen(r, "rb")
    first = reader.readline()
    assert first == b"ready\n", first
    t0 = time.perf_counter()
    killed = False
    if kill_after is not None:
        time.sleep(kill_after)
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            killed = True
        else:
            pid = None  # already exited and reaped
    rest, stamps = [], {}
    for line in reader:  # line by line, to time the phases of an uninterrupted run
        rest.append(line.strip())
        stamps.setdefault(line.strip(), time.perf_counter() - t0)
    reader.close()
    if pid is not None:
        os.waitpid(pid, 0)
    assert not any(x.startswith(b"error") for x in rest), rest
    return killed, {int(x) for x in rest if x.isdigit()}, b"done" in rest, stamps


def test_sigkill_at_random_points_then_resume(tmp_path):
    kills_wanted = int(os.environ.get("SAMREFINE_CRASH_KILLS", "25"))
    t_start = time.perf_counter()
    rounds = 0
    rng = np.random.default_rng(0)
    path = tmp_path / "crash.srlib"
    # an uninterrupted reference build times a whole run and its finish()
    ref = tmp_path / "reference.srlib"
    _, _, ref_done, stamps = _run_child(ref)
    assert ref_done
    t_full, t_finish = stamps[b"done"], stamps[b"done"] - stamps[b"finishing"]
    kills, finish_kills, committed = 0, 0, set()
    held = set()
    while kills < kills_wanted:
        # aim at the work left: the appends still to do, then finish()
        left = (N_IMAGES - len(held)) / N_IMAGES
        span = (t_full - t_finish) * left + t_finish * 1.5 + 0.002
        killed, got, done, _ = _run_child(path, kill_after=float(rng.uniform(0, span)))
        rounds += 1
        kills += killed
        committed |= got
        lib = ProposalLibrary.open(path)  # opens after any kill ...
        held = set(lib.image_ids().tolist())
        assert committed <= held  # ... and holds every image committed before it
        for i in sorted(got)[-2:]:
            assert lib[i] == _props(i)
        finished = lib.finished
        lib.close()
        if killed and len(held) == N_IMAGES and not finished:
            finish_kills += 1
        if done and kills < kills_wanted:
            for p in path.parent.glob("crash.srlib*"):  # a new build: kills land everywhere
                p.unlink()
            committed, held = set(), set()
    _, _, done, _ = _run_child(path)  # resume the last killed build to the end
    assert done
    a, b = ProposalLibrary.open(path), ProposalLibrary.open(ref)
    assert a.finished and len(a) == N_IMAGES
    assert a.info["content_sha256"] == b.info["content_sha256"]
    for i in range(0, N_IMAGES, 7):
        assert a[i] == b[i]
    assert verify_library(path).ok
    print(
        f"\ncrash test: {kills} SIGKILLs in {rounds} rounds, {finish_kills} of them during "
        f"finish(); {time.perf_counter() - t_start:.1f} s",
        file=sys.stderr,
    )
