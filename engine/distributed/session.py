"""Connecting to Ray and deciding the workers: how many, on what, with how many threads.

Ray is imported here only, and only when a sharded run starts.

Workers (`--workers auto`):
- GPUs: one worker per GPU (Ray pins each worker to its own GPU).
- CPUs: each worker gets `--threads` threads, or by default all cores when a machine has fewer
  than 4 (one worker: splitting 2-3 cores gains nothing), else 2 threads (4 from 16 cores up:
  fewer copies of the model in memory); a machine with C cores runs C // threads workers.
`--workers N` on CPUs gives each worker `--threads` threads, or the cores divided by N.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.error_codes import WORKERS_GPUS, WORKERS_INVALID, WORKERS_TOO_FEW
from engine.errors import ConfigError, CrossEarthError, DeviceError
from engine.raster.raster_input import first_line

# The object store carries only shard descriptions and small results, never image data.
OBJECT_STORE_BYTES = 128 << 20
# How long a cluster address may take to accept a connection before it is called unreachable
# (Ray itself keeps retrying for minutes).
CONNECT_TIMEOUT_S = 5.0
# The ports an address without one means: the head's GCS, and Ray Client's for ray://.
_DEFAULT_PORTS = {"": 6379, "ray://": 10001}
ENGINE_ROOT = Path(__file__).resolve().parents[2]


def parse_workers(value: int | str | None) -> int | None:
    """`--workers`: a positive number, or 'auto' / None (decided from the hardware)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return None
        try:
            number = int(text)
        except ValueError:
            raise ConfigError(
                f"workers '{value}' is not valid; give a number of workers (e.g. 2) or auto",
                code=WORKERS_INVALID,
                option="workers",
                value=value,
            ) from None
    if number < 1:
        raise ConfigError(
            f"workers {number} must be at least 1 (or auto)",
            code=WORKERS_TOO_FEW,
            option="workers",
            value=number,
        )
    return number


def local_cores() -> int:
    """The CPU cores this process may use (its affinity on Linux)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def auto_threads(cores: int) -> int:
    """Threads per CPU worker when neither --threads nor --workers says: see the module doc."""
    if cores < 4:
        return cores
    return 2 if cores < 16 else 4


@dataclass(frozen=True)
class WorkerPlan:
    """How the run's workers are placed: `count` actors, each on a GPU or on `threads` CPUs."""

    count: int
    gpu: bool
    threads: int | None  # torch threads per worker (None: torch's default, on GPUs)

    @property
    def num_cpus(self) -> float:
        """The CPUs Ray reserves for each worker."""
        return 1 if self.gpu else float(self.threads or 1)

    @property
    def num_gpus(self) -> float:
        """The GPUs Ray reserves for each worker (one or none)."""
        return 1 if self.gpu else 0

    def describe(self) -> str:
        """The placement in words, for the progress message."""
        if self.gpu:
            return f"{self.count} worker(s), one GPU each"
        return f"{self.count} worker(s) on CPU, {self.threads} thread(s) each"


def wants_gpu(device: str) -> bool | None:
    """True: GPUs required, False: CPU only, None: GPUs when there are any."""
    name = (device or "auto").strip().lower()
    if name == "cpu":
        return False
    if name == "cuda" or name.startswith("cuda:"):
        return True
    if name == "auto":
        return None
    raise CrossEarthError(f"device '{device}' is not valid; use auto, cpu, cuda or cuda:N")


def local_plan(device: str, workers: int | None, threads: int | None) -> WorkerPlan:
    """Workers on this machine (before Ray starts: it is started with just these resources)."""
    gpu = wants_gpu(device)
    gpus = 0
    if gpu is not False:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpu and not gpus:
            reason = (
                f"CUDA is not available (torch {torch.__version__}, no usable NVIDIA GPU/driver)"
            )
            raise DeviceError(
                f"device '{device}' requested but {reason}; use the device cpu or auto",
                device=device,
                reason=reason,
                option="device",
            )
    if gpus:
        count = workers or gpus
        if count > gpus:
            raise ConfigError(
                f"{count} workers need {count} GPUs but this machine has {gpus}; use {gpus} "
                "workers (or auto), or the device cpu",
                code=WORKERS_GPUS,
                option="workers",
                value=count,
                gpus=gpus,
            )
        return WorkerPlan(count, True, threads)
    cores = local_cores()
    if workers is None:
        per_worker = threads or auto_threads(cores)
        return WorkerPlan(max(1, cores // per_worker), False, per_worker)
    return WorkerPlan(workers, False, threads or max(1, cores // workers))


def cluster_plan(ray: Any, device: str, workers: int | None, threads: int | None) -> WorkerPlan:
    """Workers on the connected cluster, from the resources its alive nodes offer."""
    gpu = wants_gpu(device)
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(n.get("GPU", 0) for n in nodes))
    if gpu and not gpus:
        raise DeviceError(
            f"device '{device}' requested but the Ray cluster has no GPUs; use the device cpu "
            "or auto",
            device=device,
            reason="the Ray cluster has no GPUs",
            option="device",
        )
    if gpu is not False and gpus:
        return WorkerPlan(workers or gpus, True, threads)
    node_cpus = [int(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) >= 1] or [1]
    if workers is None:
        per_worker = threads or auto_threads(max(node_cpus))
        count = sum(max(0, cpus // per_worker) for cpus in node_cpus)
        return WorkerPlan(max(1, count), False, per_worker)
    per_worker = threads or min(max(node_cpus), max(1, sum(node_cpus) // workers))
    return WorkerPlan(workers, False, per_worker)


def check_reachable(cluster: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuses, within `timeout_s`, a cluster address that accepts no connection ("auto" is
    Ray's own search for a cluster on this machine and is left to Ray)."""
    scheme = "ray://" if cluster.startswith("ray://") else ""
    rest = cluster[len(scheme) :].strip()
    if rest in ("", "auto", "local"):
        return
    host, colon, port_text = rest.rpartition(":")
    if not colon or not port_text.isdigit():
        host, port = rest, _DEFAULT_PORTS[scheme]
    else:
        port = int(port_text)
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout_s):
            pass
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer on port {port} within {timeout_s:g} s"
        else:
            reason = f"{exc.strerror or exc} on port {port}"
        raise CrossEarthError(
            f"cannot reach the Ray cluster at {cluster} ({reason}); check the address and that "
            "the cluster runs (`ray start --head`)",
            option="cluster",
        ) from None


class RaySession:
    """Ray for one run: an existing connection is used as it is; otherwise a local instance
    is started (`cluster` None) or the cluster at `cluster` ('auto', 'host:port' or
    'ray://host:port') is joined, and `close` shuts down / disconnects what was opened."""

    def __init__(self) -> None:
        self.ray: Any = None
        self.opened = False

    def open(self, cluster: str | None, local: WorkerPlan | None) -> Any:
        """The `ray` module, connected: an existing connection, a local instance sized by `local`,
        or the cluster at `cluster`; a failed start is a CrossEarthError."""
        import ray

        self.ray = ray
        if ray.is_initialized():
            return ray
        in_main = threading.current_thread() is threading.main_thread()
        # ray.init replaces the SIGTERM handler with sys.exit; the CLI's turns SIGTERM into
        # KeyboardInterrupt, which the run's clean-up (and exit code 130) relies on.
        previous = signal.getsignal(signal.SIGTERM) if in_main else None
        quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        try:
            if cluster is None:
                assert local is not None
                _loopback_only(ray)
                path = os.pathsep.join(
                    p for p in (str(ENGINE_ROOT), os.environ.get("PYTHONPATH", "")) if p
                )
                ray.init(
                    address="local",
                    num_cpus=max(1, round(local.count * local.num_cpus)),
                    include_dashboard=False,
                    # A local instance talks over the loopback interface only.
                    _node_ip_address="127.0.0.1",
                    object_store_memory=OBJECT_STORE_BYTES,
                    # Workers import this very engine, also when it is not installed.
                    runtime_env={"env_vars": {"PYTHONPATH": path}},
                    **quiet,
                )
            elif cluster.startswith("ray://"):
                check_reachable(cluster)
                ray.init(address=cluster, logging_level=logging.ERROR)
            else:
                check_reachable(cluster)
                ray.init(address=cluster, **quiet)
        except BaseException as exc:
            ray.shutdown()  # whatever a failed or interrupted start left running
            if not isinstance(exc, Exception) or isinstance(exc, CrossEarthError):
                raise
            if cluster is None:
                raise CrossEarthError(
                    f"cannot start a local Ray instance ({first_line(exc)}); check that local "
                    "ports are free and the temp folder is writable"
                ) from None
            raise CrossEarthError(
                f"cannot connect to the Ray cluster at {cluster} ({first_line(exc)}); check the "
                "address, that the cluster runs (`ray start --head`), and its authentication "
                "token (RAY_AUTH_MODE, RAY_AUTH_TOKEN)"
            ) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self.opened = True
        return ray

    def close(self) -> None:
        """Shuts down or disconnects what `open` started; a connection it found is left alone."""
        if self.opened and self.ray is not None:
            self.ray.shutdown()
            self.opened = False


def _loopback_only(ray: Any) -> None:
    """A local instance serves this process only: Ray binds it to the loopback interface
    (its own "laptop" mode) instead of the machine's network address, for the processes it
    starts too."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
