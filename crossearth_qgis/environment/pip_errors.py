"""What went wrong in a failed `pip install`, in one line: the real cause and its fix.

pip words its failures over many lines: `ERROR:` lines, `error:` lines with the cause on the
indented lines under them (pip >= 23: `error: metadata-generation-failed`, `× ... did not run
successfully.`), and the network's complaints as WARNING retries. Reading only `ERROR:` lines
blames the internet for a package that had no wheel; this module reads them all, in the order a
user would want them explained: no space, no network, no wheel (so pip tried to build from
source), no release at all, permissions, then whatever pip said last.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

PYPI = "https://pypi.org/simple/"

_DISK = (
    "No space left on device",
    "[Errno 28]",
    "Disk quota exceeded",
    "[Errno 27] File too large",  # a file-size limit, or FAT32's 4 GB
)
_NETWORK = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "nodename nor servname provided",
    "getaddrinfo failed",
    "Network is unreachable",
    "Connection refused",
    "ProxyError",
    "Read timed out",
    "ConnectTimeoutError",
    "Connection reset by peer",
    "RemoteDisconnected",
    "CERTIFICATE_VERIFY_FAILED",
    "SSLError",
)
_BUILD = (
    "metadata-generation-failed",
    "subprocess-exited-with-error",
    "Failed building wheel for",
    "Failed to build ",
    "did not run successfully",
)
_NO_COMPILER = (
    "command 'gcc' failed",
    "command 'cc' failed",
    "Unknown compiler(s)",
    "No such file or directory: 'gcc'",
    "Microsoft Visual C++",
    "xcrun: error",
    "Python.h: No such file or directory",
    "command 'x86_64-linux-gnu-gcc' failed",
)
# setuptools' words when the compiler it was told to use does not exist (CC=..., or no gcc).
_MISSING_COMPILER = re.compile(
    r"command '[^']+' failed: No such file or directory"
    r"|No such file or directory: '[^']*(?:cc|gcc|clang|c\+\+|g\+\+)'"
)
_SDIST = re.compile(r"Downloading (?:\S*/)?([A-Za-z0-9_.\-]+?)-(\d[^\s/]*?)\.(?:tar\.gz|zip)\b")
# "Failed to build X" is left out: pip 25 words it "Failed to build installable wheels ...".
_BUILDING = re.compile(
    r"(?:Building wheel for|Preparing metadata \(pyproject\.toml\) for|Getting requirements to "
    r"build wheel for|Failed building wheel for)\s+([A-Za-z0-9_.\-]+)"
)
_COLLECTING = re.compile(r"^Collecting ([A-Za-z0-9_.\-]+)")
_NO_MATCH = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the "
    r"requirement)\s+([^\s(]+)"
)


def index_url(lines: Sequence[str]) -> str:
    """The index pip looked in (it says so when it is not PyPI), without credentials."""
    for line in lines:
        if line.startswith("Looking in indexes: "):
            url = line.split(": ", 1)[1].split(",")[0].strip()
            parts = urllib.parse.urlsplit(url)
            return (
                parts._replace(netloc=parts.hostname or "").geturl()
                if parts.port is None
                else (parts._replace(netloc=f"{parts.hostname}:{parts.port}").geturl())
            )
    return PYPI


def reachable(url: str, timeout_s: float = 10.0) -> bool:
    """Whether an HTTP server answers at `url` at all (any status counts), through the same
    proxy variables pip reads."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def diagnose(
    lines: Sequence[str],
    python_version: str,
    disk_hint: str = "",
    index_answers: Callable[[str], bool] = reachable,
) -> str:
    """The cause of a failed pip run and its fix, in one sentence (no trailing period).
    `index_answers(url)` is asked when pip found nothing: with retries off, pip's only words
    for an index it could not reach are "No matching distribution"."""
    text = "\n".join(lines)
    if any(mark in text for mark in _DISK):
        where = f" ({disk_hint})" if disk_hint else ""
        return f"the disk is full{where}: free some space and run the set-up again"
    network = _first_line_with(lines, _NETWORK)
    if network:
        return (
            "pip cannot reach the package index (" + _shorten(network) + "); check the internet "
            "connection or the proxy (pip reads HTTPS_PROXY and PIP_INDEX_URL) and run the "
            "set-up again"
        )
    if any(mark in text for mark in _BUILD):
        package = _package_built(lines)
        what = f"{package} has" if package else "a requirement has"
        cause = (
            "no C compiler is installed"
            if any(mark in text for mark in _NO_COMPILER) or _MISSING_COMPILER.search(text)
            else "the build failed"
        )
        return (
            f"{what} no ready-made package (wheel) for Python {python_version} on this "
            f"computer, so pip tried to build it from source and {cause}; choose a Python that "
            "the engine's requirements publish wheels for (3.10 to 3.14 on 64-bit Windows, "
            "macOS and Linux) in Settings > Options > CrossEarth"
        )
    missing = _NO_MATCH.search(text)
    if missing and not index_answers(index_url(lines)):
        return (
            f"pip cannot reach the package index ({index_url(lines)} does not answer); check the "
            "internet connection or the proxy (pip reads HTTPS_PROXY and PIP_INDEX_URL) and run "
            "the set-up again"
        )
    if missing:
        return (
            f"no release of {missing.group(1)} installs on Python {python_version} on this "
            "computer; choose a Python 3.10 to 3.14 (64-bit) in Settings > Options > CrossEarth"
        )
    if "[Errno 13]" in text or "Permission denied" in text:
        denied = _first_line_with(lines, ("[Errno 13]", "Permission denied"))
        return (
            f"permission denied ({_shorten(denied)}); choose an environment folder you may write to"
        )
    last = [line.strip() for line in lines if line.strip().startswith(("ERROR:", "error:"))]
    if last:
        return _shorten(last[-1].split(":", 1)[1].strip())
    return ""


def _first_line_with(lines: Sequence[str], marks: Sequence[str]) -> str:
    for line in lines:
        if any(mark in line for mark in marks):
            return line.strip()
    return ""


def _package_built(lines: Sequence[str]) -> str:
    """The package pip was building when it failed: named by the build lines, else by the
    last source archive it downloaded, else the last requirement it collected."""
    built = sdist = collected = ""
    for line in lines:
        stripped = line.strip()
        if match := _BUILDING.search(stripped):
            built = match.group(1)
        if match := _SDIST.search(stripped):
            sdist = f"{match.group(1)} {match.group(2)}"
        if match := _COLLECTING.match(stripped):
            collected = match.group(1)
    return built or sdist or collected


def _shorten(line: str, limit: int = 160) -> str:
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
