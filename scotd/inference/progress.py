"""Progress of an engine stage from generated tokens, not finished questions.

Every batch in flight finishes at about the same time (an engine takes as many at once as fill it), so finished
questions say nothing for the first minutes of a stage. Tokens do: each engine step adds one token to every sequence
it runs, so the sum over steps of the engine's unfinished sequences (``StepAccount.seq_steps``) counts the tokens
generated so far, from the first step on. The engines post their account to a ``ProgressBoard`` actor every few
seconds; the driver reads it and logs the rate and the time left:

    time left = (sequences x expected tokens per sequence - tokens so far) / tokens per second

The expected length is the caller's prior (a teacher's: its exemplars' answers; an evaluation's: the kept
rationales) until a fifth of the sequences have finished, then the mean of the finished ones; never below 1.1 times
the mean so far while sequences still run.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

log = logging.getLogger(__name__)

POST_EVERY_S = 5.0
WINDOW_S, MIN_WINDOW_S = 60.0, 20.0  # the rate is taken over the last minute, once 20 s of it are there
# The share of sequences that must have finished before their mean length replaces the prior: the first to finish
# are the short ones.
FINISHED_SHARE = 0.2


class ProgressBoard:
    """A Ray actor holding each engine's latest account (engine id -> dict), posted by the engines."""

    def __init__(self) -> None:
        self.engines: dict[str, dict] = {}

    def post(self, engine_id: str, account: dict) -> None:
        self.engines[engine_id] = account

    def read(self) -> dict[str, dict]:
        return self.engines


def start_board():
    """A fresh board for one engine stage (no CPU reserved); returns (handle, name)."""
    import ray

    name = f"scotd-progress-{uuid.uuid4().hex[:12]}"
    board = ray.remote(num_cpus=0)(ProgressBoard).options(name=name).remote()
    return board, name


def post_account(name: str, engine_id: str, account_fn, stop: threading.Event) -> None:
    """In an engine actor's thread: post ``account_fn()`` to the board ``name`` every ``POST_EVERY_S`` until
    ``stop`` is set or the board is gone (the stage ended)."""
    import ray

    try:
        board = ray.get_actor(name)
    except ValueError:
        return
    previous = None
    while not stop.wait(POST_EVERY_S):
        try:
            if previous is not None:
                ray.get(previous, timeout=30)
            previous = board.post.remote(engine_id, account_fn())
        except Exception:  # noqa: BLE001 - the board was killed at the end of the stage: nothing left to tell
            return


def estimate(engines: dict[str, dict], *, sequences: int, expected_tokens: float, now: float,
             rate: float | None = None, step_rate: float | None = None, in_flight: int | None = None,
             max_tokens: int | None = None) -> dict | None:
    """Tokens so far, tokens per second and seconds left over ``engines``' accounts (pure); None before any step.

    Each account: ``first_step_at`` (wall clock), ``seq_steps`` (tokens so far), ``steps``, ``finished_sequences``
    and ``finished_tokens`` (of the sequences that ended). ``rate``: tokens per second over a recent window (the
    ``Reporter``'s); by default each engine's average since its first step.

    Where every sequence runs at once (``sequences`` <= ``in_flight``), the stage ends with its longest sequence, not
    when the tokens run out at today's rate: the rate falls as sequences finish. So with ``step_rate`` (engine steps
    per second) the time left is at least the steps the longest sequence still needs, taken as 1.5 times the
    expected length (at most ``max_tokens``)."""
    running = [e for e in engines.values() if e.get("first_step_at") is not None]
    if not running:
        return None
    tokens = sum(e["seq_steps"] for e in running)
    if rate is None:
        elapsed = [now - e["first_step_at"] for e in running]
        rate = sum(e["seq_steps"] / s for e, s in zip(running, elapsed) if s > 0)
    finished = sum(e["finished_sequences"] for e in running)
    per_sequence = (sum(e["finished_tokens"] for e in running) / finished
                    if finished and finished >= FINISHED_SHARE * sequences else expected_tokens)
    if finished < sequences:  # the mean so far is a floor of the final mean while sequences still run
        per_sequence = max(per_sequence, 1.1 * tokens / sequences)
    total = max(sequences * per_sequence, tokens + (sequences - finished))  # at least a token for each one left
    left = (total - tokens) / rate if rate > 0 else float("inf")
    if step_rate and in_flight and sequences <= in_flight and finished < sequences:
        longest = min(1.5 * per_sequence, max_tokens or float("inf"))
        steps = max(e.get("steps", 0) for e in running)
        left = max(left, max(longest - steps, 0) / step_rate)
    return {"tokens": tokens, "tokens_per_s": rate, "expected_tokens": total, "seconds_left": left}


class Reporter:
    """The driver's side: a thread that reads the board every ``every_s`` and logs one line, with the questions
    done so far (``done()``)."""

    def __init__(self, board, *, label: str, sequences: int, expected_tokens: float, total: int, unit: str,
                 done, every_s: float = 30.0, poll_s: float = POST_EVERY_S, min_window_s: float = MIN_WINDOW_S,
                 in_flight: int = 1, max_tokens: int | None = None):
        self.board, self.label, self.sequences, self.expected = board, label, sequences, expected_tokens
        self.total, self.unit, self.done, self.every_s = total, unit, done, every_s
        self.poll_s, self.min_window_s, self.in_flight, self.max_tokens = poll_s, min_window_s, in_flight, max_tokens
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scotd-progress", daemon=True)

    def __enter__(self) -> Reporter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import ray

        started = time.monotonic()
        logged, last_line = False, 0.0
        seen: list[tuple[float, int]] = []  # (wall clock, tokens so far) of every read
        steps: list[tuple[float, int]] = []  # (wall clock, engine steps so far)
        while not self._stop.wait(self.poll_s):
            try:
                engines = ray.get(self.board.read.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - no board to read: no line
                continue
            now = time.time()
            running = {k: e for k, e in engines.items() if e.get("first_step_at") is not None}
            seen.append((now, sum(e["seq_steps"] for e in running.values())))
            steps.append((now, max((e.get("steps", 0) for e in running.values()), default=0)))
            # every sequence in flight has its first token and one more: the engine decodes at its pace
            start = 2 * min(self.sequences, self.in_flight)
            rate = window_rate(seen, now, self.min_window_s, decoding_from=start)
            if rate is None or (logged and time.monotonic() - last_line < self.every_s):
                continue
            decoding = [(t, n) for (t, n), (_, tokens) in zip(steps, seen) if tokens >= start]
            step_rate = window_rate(decoding, now, self.min_window_s)
            guess = estimate(running, sequences=self.sequences, expected_tokens=self.expected, now=now, rate=rate,
                             step_rate=step_rate, in_flight=self.in_flight, max_tokens=self.max_tokens)
            if guess is None or self._stop.is_set():
                continue
            last_line = time.monotonic()
            logged = True
            log.info("[%s] %s tokens generated, %.1f tokens/s; %d/%d %s done; ~%s left (%.0f s in)", self.label,
                     f"{guess['tokens']:,}", guess["tokens_per_s"], self.done(), self.total, self.unit,
                     duration(guess["seconds_left"]), time.monotonic() - started)


def window_rate(seen: list[tuple[float, int]], now: float, min_window_s: float = MIN_WINDOW_S,
                decoding_from: int = 1) -> float | None:
    """Tokens per second over the last ``WINDOW_S`` seconds of ``seen`` (wall clock, tokens so far), from the first
    read with ``decoding_from`` tokens on; None until that spans ``min_window_s`` (pure). A recent window from the
    first decode steps on, not the average since the first step: the first steps fill the prompts of every sequence
    and give each one token, and the first step over all of them takes longest; neither is the pace after."""
    started = [(t, n) for t, n in seen if n >= max(decoding_from, 1)]
    if not started:
        return None
    recent = [(t, n) for t, n in started if now - t <= WINDOW_S] or started[-1:]
    (t0, n0), (t1, n1) = recent[0], started[-1]
    if t1 - t0 < min_window_s:
        earlier = [(t, n) for t, n in started if t1 - t >= min_window_s]
        if not earlier:
            return None
        t0, n0 = earlier[-1]
    return (n1 - n0) / (t1 - t0) if n1 > n0 else None


def duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
