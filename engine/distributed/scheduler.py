"""Running shards on Ray actors: hand-out, progress, retries after a worker died, and stop.

Each worker gets one shard at a time; the next goes to whichever worker is free first. A
worker that dies (killed, out of memory, node lost) has its shard put back at the front of the
queue and is replaced by a new worker; a shard whose workers died MAX_RETRIES times stops the
run. A shard that fails deterministically (damaged data) stops the run at once with the
worker's one-line message.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.distributed.actor import WorkerFailure, WorkerSpec, remote_worker_class
from engine.distributed.parts import PartInfo
from engine.distributed.session import WorkerPlan
from engine.distributed.shards import Shard
from engine.errors import CrossEarthError, SegmentationCancelled
from engine.raster.raster_input import first_line

MAX_RETRIES = 3
WAIT_S = 0.25
POLL_EVERY_S = 1.0
REPORT_EVERY_S = 1.0
STOP_WAIT_S = 15.0
WORKER_NAME_PREFIX = "crossearth-worker-"
INPUT_HINT = (
    "every worker must reach the input and the model (local disk on one machine; shared "
    "storage or /vsis3/, /vsicurl/ on a cluster)"
)


@dataclass
class _Slot:
    """One worker position: the actor now filling it and what it does."""

    actor: Any
    host: str = ""
    pid: int = 0
    ready: bool = False
    shard: Shard | None = None
    since: float = 0.0  # when it became ready
    tiles: int = 0  # tiles of its finished shards
    running: int = 0  # tiles done in the shard it runs (last poll)
    polling: bool = False


@dataclass
class RunStats:
    """What the workers did: parts made, retries, tiles per second per worker."""

    parts: dict[int, PartInfo] = field(default_factory=dict)
    retries: int = 0
    tiles_computed: int = 0
    throughput: dict[str, float] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)


def _death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for a worker process or node that went away (not a failure of the task)."""
    exceptions = ray.exceptions
    names = (
        "RayActorError",
        "WorkerCrashedError",
        "NodeDiedError",
        "OutOfMemoryError",
        "LocalRayletDiedError",
        "ObjectLostError",
    )
    return tuple(getattr(exceptions, n) for n in names if hasattr(exceptions, n))


class ShardScheduler:
    """Runs `shards` on `plan.count` actors; `run` returns the parts, `stop` ends the actors."""

    def __init__(
        self,
        ray: Any,
        spec: WorkerSpec,
        plan: WorkerPlan,
        report: Callable[[float, str], None],
        is_cancelled: Callable[[], bool],
        *,
        total_tiles: int,
        done_tiles: int,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self.ray = ray
        self.spec = spec
        self.plan = plan
        self.report = report
        self.is_cancelled = is_cancelled
        self.total_tiles = total_tiles
        self.done_before = done_tiles  # tiles of parts reused from an earlier run
        self.max_retries = max_retries
        self.actor_class = remote_worker_class(plan.num_cpus, plan.num_gpus)
        self.slots: list[_Slot] = []
        self.inflight: dict[Any, tuple[str, _Slot]] = {}
        self.stats = RunStats()
        self._numbers = 0
        self._token = secrets.token_hex(4)
        self._deaths_before_ready = 0
        self._death = _death_errors(ray)

    # -- workers ---------------------------------------------------------------------------

    def _start_worker(self) -> _Slot:
        # Named (crossearth-worker-<run>-<n>) so that `ray list actors` shows whose they are.
        name = f"{WORKER_NAME_PREFIX}{self._token}-{self._numbers}"
        slot = _Slot(self.actor_class.options(name=name).remote(self.spec))
        self._numbers += 1
        self.slots.append(slot)
        self.inflight[slot.actor.prepare.remote()] = ("prepare", slot)
        return slot

    def _replace(self, slot: _Slot) -> None:
        self.slots.remove(slot)
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(slot.actor, no_restart=True)
        self._start_worker()

    def stop(self) -> None:
        """Kills every worker and waits (bounded) until the shards they ran have ended, so
        no worker still writes a part file when the caller removes them."""
        for slot in self.slots:
            with contextlib.suppress(Exception):
                self.ray.kill(slot.actor, no_restart=True)
        running = [ref for ref, (kind, _) in self.inflight.items() if kind != "poll"]
        if running:
            with contextlib.suppress(Exception):
                self.ray.wait(running, num_returns=len(running), timeout=STOP_WAIT_S)
        self.inflight.clear()
        self.slots.clear()

    # -- the run ---------------------------------------------------------------------------

    def run(self, shards: list[Shard]) -> RunStats:
        """Runs every shard on the workers, retrying a shard whose worker failed, and returns what
        they made; raises SegmentationCancelled when the run is cancelled."""
        pending = deque(shards)
        attempts = {shard.index: 0 for shard in shards}
        for _ in range(min(self.plan.count, len(shards))):
            self._start_worker()
        self.report(0.0, f"starting {len(self.slots)} worker(s) ({self.plan.describe()})")
        last_poll = last_report = 0.0
        while pending or any(slot.shard is not None for slot in self.slots):
            if self.is_cancelled():
                raise SegmentationCancelled()
            for slot in self.slots:
                if slot.ready and slot.shard is None and pending:
                    slot.shard, slot.running = pending.popleft(), 0
                    self.inflight[slot.actor.run.remote(slot.shard)] = ("run", slot)
            now = time.perf_counter()
            if now - last_poll >= POLL_EVERY_S:
                last_poll = now
                for slot in self.slots:
                    if slot.shard is not None and not slot.polling:
                        slot.polling = True
                        self.inflight[slot.actor.progress.remote()] = ("poll", slot)
            ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=WAIT_S)
            if ready:  # and whatever else has finished meanwhile
                ready, _ = self.ray.wait(
                    list(self.inflight), num_returns=len(self.inflight), timeout=0
                )
            for ref in ready:
                kind, slot = self.inflight.pop(ref)
                self._handle(kind, slot, ref, pending, attempts)
            now = time.perf_counter()
            if now - last_report >= REPORT_EVERY_S:
                last_report = now
                self._report_progress()
        self._report_progress()
        self._finish_stats()
        return self.stats

    def _handle(
        self, kind: str, slot: _Slot, ref: Any, pending: deque[Shard], attempts: dict[int, int]
    ) -> None:
        if kind == "poll":
            slot.polling = False
            # A dying worker's poll fails; its shard's result says what happened.
            with contextlib.suppress(Exception):
                slot.running = int(self.ray.get(ref))
            return
        try:
            value = self.ray.get(ref)
        except self._death as exc:
            self._worker_died(kind, slot, exc, pending, attempts)
            return
        except self.ray.exceptions.RayTaskError as exc:
            # An unexpected error inside the worker (not an input error): the same error as a
            # single-process run would raise.
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        if kind == "prepare":
            if "error" in value:
                raise CrossEarthError(
                    f"a worker on {value.get('host', '?')} cannot do the job: {value['error']} "
                    f"({INPUT_HINT})"
                )
            slot.ready, slot.since = True, time.perf_counter()
            slot.host, slot.pid = str(value.get("host", "")), int(value.get("pid", 0))
            self.stats.workers.append(f"{slot.host}:{slot.pid} ({value.get('device')})")
            return
        assert slot.shard is not None
        if isinstance(value, WorkerFailure):
            raise CrossEarthError(value.message)
        self.stats.parts[slot.shard.index] = value
        self.stats.tiles_computed += value.tiles
        slot.tiles += value.tiles
        slot.shard, slot.running = None, 0

    def _worker_died(
        self,
        kind: str,
        slot: _Slot,
        exc: BaseException,
        pending: deque[Shard],
        attempts: dict[int, int],
    ) -> None:
        if slot not in self.slots:
            return  # already replaced
        reason = first_line(exc)
        shard = slot.shard
        if shard is not None:
            attempts[shard.index] += 1
            self.stats.retries += 1
            if attempts[shard.index] > self.max_retries:
                raise CrossEarthError(
                    f"shard {shard.index} (rows {shard.first}..{shard.end}) was given to "
                    f"{attempts[shard.index]} workers and each of them died ({reason}); check "
                    "the workers' memory and the nodes"
                )
            pending.appendleft(shard)
            slot.shard = None
        elif not slot.ready:
            self._deaths_before_ready += 1
            if self._deaths_before_ready > self.max_retries * max(1, self.plan.count):
                raise CrossEarthError(
                    f"workers keep dying while they load the model ({reason}); check that "
                    f"crossearth-qgis is installed on every node and that a worker has memory "
                    "for the model"
                )
        self.report(
            self._fraction(),
            f"a worker died ({reason}); "
            + (f"shard {shard.index} goes to another worker" if shard else "starting another"),
        )
        self._replace(slot)

    # -- progress --------------------------------------------------------------------------

    def _tiles_done(self) -> int:
        running = sum(slot.running for slot in self.slots if slot.shard is not None)
        return self.done_before + self.stats.tiles_computed + running

    def _fraction(self) -> float:
        return min(1.0, self._tiles_done() / max(1, self.total_tiles))

    def _rates(self) -> list[float]:
        now = time.perf_counter()
        return [
            (slot.tiles + slot.running) / max(1e-6, now - slot.since)
            for slot in self.slots
            if slot.ready
        ]

    def _report_progress(self) -> None:
        done = self._tiles_done()
        rates = self._rates()
        if not rates:
            self.report(
                self._fraction(),
                f"waiting for {len(self.slots)} worker(s) to start and load the model",
            )
            return
        total_rate = sum(rates)
        left = self.total_tiles - done
        eta = f", ETA {_duration(left / total_rate)}" if total_rate > 0 and left > 0 else ""
        shown = " ".join(f"{rate:.1f}" for rate in rates)
        self.report(
            self._fraction(),
            f"tile {done}/{self.total_tiles} on {len(rates)} worker(s) ({shown} tiles/s){eta}",
        )

    def _finish_stats(self) -> None:
        now = time.perf_counter()
        for slot in self.slots:
            if slot.ready:
                rate = slot.tiles / max(1e-6, now - slot.since)
                self.stats.throughput[f"{slot.host}:{slot.pid}"] = round(rate, 2)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"
