"""Progress from generated tokens (scotd.inference.progress), signals, and the driver's terminal (scotd.console)."""

import logging
import os
import signal
import subprocess
import sys
import time
import textwrap

import pytest

from scotd.cli import resume_command
from scotd.console import Interrupted, stop_on_signals
from scotd.inference.progress import FINISHED_SHARE, Reporter, duration, estimate, start_board, window_rate
from tests.conftest import REPO


def account(first_step_at, seq_steps, finished_sequences=0, finished_tokens=0):
    return {"first_step_at": first_step_at, "seq_steps": seq_steps, "finished_sequences": finished_sequences,
            "finished_tokens": finished_tokens}


def test_no_estimate_before_an_engine_steps():
    assert estimate({}, sequences=10, expected_tokens=50, now=100.0) is None
    assert estimate({"e": account(None, 0)}, sequences=10, expected_tokens=50, now=100.0) is None


def test_early_estimate_uses_the_prior_length_and_the_token_rate():
    # 1,000 sequences of ~50 tokens expected; 20 s in, 2,000 tokens, none finished: 100 tokens/s, 480 s left
    guess = estimate({"e": account(80.0, 2000)}, sequences=1000, expected_tokens=50, now=100.0)
    assert guess["tokens_per_s"] == pytest.approx(100.0)
    assert guess["expected_tokens"] == 50_000 and guess["seconds_left"] == pytest.approx(480.0)


def test_finished_lengths_replace_the_prior_once_a_fifth_has_finished():
    few = estimate({"e": account(0.0, 1000, finished_sequences=10, finished_tokens=100)}, sequences=100,
                   expected_tokens=50, now=10.0)
    assert few["expected_tokens"] == 5000  # 10 % finished, short ones first: still the prior
    many = estimate({"e": account(0.0, 2000, finished_sequences=int(FINISHED_SHARE * 100), finished_tokens=600)},
                    sequences=100, expected_tokens=50, now=10.0)
    assert many["expected_tokens"] == 3000  # 30 tokens each, from the finished ones
    assert many["seconds_left"] == pytest.approx(1000 / 200)


def test_running_sequences_past_the_prior_raise_the_expected_length():
    late = estimate({"e": account(0.0, 8000)}, sequences=256, expected_tokens=25, now=100.0)
    assert late["expected_tokens"] == pytest.approx(1.1 * 8000)  # not "7 s left" with 256 sequences still running
    assert late["seconds_left"] == pytest.approx(800 / 80)


def test_engines_rates_add_up():
    guess = estimate({"a": account(0.0, 1000), "b": account(50.0, 500)}, sequences=100, expected_tokens=100,
                     now=100.0)
    assert guess["tokens"] == 1500 and guess["tokens_per_s"] == pytest.approx(10.0 + 10.0)


def test_durations_read_as_seconds_or_minutes():
    assert [duration(s) for s in (12.4, 89, 600, float("inf"))] == ["12 s", "89 s", "10 min", "?"]


def test_window_rate_uses_the_last_minute_once_20_s_are_there():
    seen = [(0.0, 0), (10.0, 256), (40.0, 256), (70.0, 1556), (100.0, 2856)]  # a slow first step, then 43 tok/s
    assert window_rate(seen[:2], 10.0) is None  # 0 s since the first tokens
    assert window_rate(seen[:3], 40.0) is None  # nothing new in 30 s: no rate yet
    assert window_rate(seen[:4], 70.0) == pytest.approx(1300 / 60)  # the last minute, stall included
    assert window_rate(seen, 100.0) == pytest.approx(2600 / 60)
    # from the first decode steps on: 256 sequences with two tokens each
    assert window_rate(seen[:4], 70.0, decoding_from=512) is None
    assert window_rate(seen, 100.0, decoding_from=512) == pytest.approx(1300 / 30)


def test_reporter_logs_tokens_rate_and_time_left_from_the_board(ray_cluster, caplog):
    """The driver's side against a real board actor on the session's Ray head; the engine's posts are made here."""
    import ray

    board, name = start_board()
    try:
        assert ray.get_actor(name) is not None
        ray.get(board.post.remote("e1", account(time.time() - 20, 400)))
        with caplog.at_level(logging.INFO, logger="scotd"):
            with Reporter(board, label="teacher", sequences=100, expected_tokens=40, total=25, unit="questions",
                          done=lambda: 3, every_s=0.5, poll_s=0.2, min_window_s=1.0):
                time.sleep(1.0)
                ray.get(board.post.remote("e1", account(time.time() - 21, 420)))  # 20 tokens in ~1 s
                deadline = time.monotonic() + 30
                while "[teacher]" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.2)
    finally:
        ray.kill(board)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[teacher]"))
    assert line.startswith("[teacher] 420 tokens generated, ") and "; 3/25 questions done; ~" in line, line
    rate = float(line.split(", ")[1].split(" ")[0])
    assert 5 < rate < 40, line  # about 20 tokens over the second between the two posts


def test_a_signal_raises_interrupted_once_then_is_ignored():
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop_on_signals()
        with pytest.raises(Interrupted) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert stopped.value.signal_name == "SIGTERM" and stopped.value.stage is None
        os.kill(os.getpid(), signal.SIGINT)  # a second signal while winding down: ignored
        time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_a_keyboard_interrupt_a_library_raised_after_a_signal_names_that_signal():
    from scotd import console

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        console.stop_on_signals()
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert console.interruption(KeyboardInterrupt()).signal_name == "SIGTERM"  # as Ray re-raises it
    finally:
        console._received.clear()
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert console.interruption(KeyboardInterrupt()).signal_name == "SIGINT"  # Ctrl-C before any handler


def test_sigterm_while_the_driver_waits_in_ray_get_stops_it(ray_cluster, tmp_path):
    """Ray's core worker runs Python's signal handlers itself while ``ray.get`` waits, and keeps only a
    KeyboardInterrupt from them (anything else is lost, and the job would run on): the stop arrives as one."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        import ray
        from scotd import console
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level="ERROR")
        console.stop_on_signals()

        @ray.remote(num_cpus=0)
        def slow():
            time.sleep(60)

        ref = slow.remote()
        print("waiting", flush=True)
        try:
            ray.get(ref)
        except KeyboardInterrupt as err:
            print("stopped by", console.interruption(err).signal_name, flush=True)
            sys.exit(3)
        print("not stopped", flush=True)
    """))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.gcs_address}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=45)
    finally:
        proc.kill()
    assert proc.returncode == 3 and "stopped by SIGTERM" in out, out[-2000:]


def test_the_resume_command_is_the_same_command_without_restart():
    assert resume_command(["run", "c.yaml", "--restart", "eval", "a.b=1"]) == "scotd run c.yaml a.b=1"
    assert resume_command(["run", "c.yaml", "--restart=teacher", "x=a b"]) == "scotd run c.yaml 'x=a b'"


def test_other_output_goes_to_the_file_and_scotd_lines_to_the_terminal(tmp_path):
    """In a process of its own, as the job's driver: native writes to fds 1 and 2 (the core worker's log lines and
    stack dumps), Python prints and other loggers' handlers go to the file; scotd's log lines stay on stderr."""
    script = textwrap.dedent(f"""
        import logging, os, sys
        from pathlib import Path
        from scotd import console
        console.setup()
        other = logging.getLogger("ray.demo")
        other.propagate = False
        other.addHandler(logging.StreamHandler(sys.stderr))
        with console.other_output_to(Path({str(tmp_path / 'driver.log')!r})):
            os.write(2, b"[2026 E 1 1] core_worker.cc:1: native line\\n")
            os.write(1, b"native stdout\\n")
            print("(raylet) WARNING: 4 PYTHON worker processes")
            other.warning("Token authentication is enabled")
            logging.getLogger("scotd.demo").info("scotd line")
        logging.getLogger("scotd.demo").info("after")
        print("report")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line.split(" ", 1)[1] for line in done.stderr.splitlines()] == ["scotd line", "after"]
    assert done.stdout == "report\n"
    kept = (tmp_path / "driver.log").read_text()
    for text in ("core_worker.cc:1: native line", "native stdout", "(raylet) WARNING", "Token authentication"):
        assert text in kept


def test_with_every_sequence_running_at_once_the_longest_sets_the_time_left():
    """256 sequences at once, 35 tokens expected each, 12 steps done at a step every 6 s: the tokens left at today's
    rate (the rate falls as sequences finish) would say 2 minutes; the longest sequence needs ~40 more steps."""
    engines = {"e": {**account(0.0, 2832), "steps": 12}}
    by_tokens = estimate(engines, sequences=256, expected_tokens=35, now=220.0, rate=42.7)
    by_steps = estimate(engines, sequences=256, expected_tokens=35, now=220.0, rate=42.7, step_rate=1 / 6,
                        in_flight=256, max_tokens=88)
    assert by_tokens["seconds_left"] == pytest.approx((256 * 35 - 2832) / 42.7)
    assert by_steps["seconds_left"] == pytest.approx((1.5 * 35 - 12) * 6)
    queued = estimate(engines, sequences=1024, expected_tokens=35, now=220.0, rate=42.7, step_rate=1 / 6,
                      in_flight=256, max_tokens=88)  # batches wait their turn: the tokens bound the time
    assert queued["seconds_left"] == pytest.approx((1024 * 35 - 2832) / 42.7)
