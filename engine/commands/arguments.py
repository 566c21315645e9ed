"""Argument types shared by the commands: each refuses a bad value in one line, as argparse
shows it (`crossearth segment: error: argument --tile: ...`)."""

from __future__ import annotations

import argparse

from engine.errors import CrossEarthError
from engine.option_values import parse_band_numbers

PROGRESS_CHOICES = ("bar", "json", "none")


def int_list(text: str) -> list[int]:
    """A band list such as "3,2,1" as numbers, for argparse."""
    try:
        return parse_band_numbers(text)
    except CrossEarthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_number(text: str, minimum: int, problem: str, not_a_number: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_a_number.format(text=text)) from None
    if value < minimum:
        raise argparse.ArgumentTypeError(problem.format(value=value))
    return value


def workers(text: str) -> int | str:
    """A number of workers (at least 1) or "auto", for argparse."""
    if text.strip().lower() == "auto":
        return "auto"
    not_workers = "'{text}' is not a number of workers; give e.g. 2, or auto"
    return _whole_number(text, 1, "{value} must be at least 1 (or auto)", not_workers)


def positive_int(text: str) -> int:
    """A whole number of at least 1, for argparse."""
    return _whole_number(text, 1, "{value} must be at least 1", "'{text}' is not a whole number")


def non_negative_int(text: str) -> int:
    """A whole number of at least 0, for argparse."""
    return _whole_number(text, 0, "{value} must not be negative", "'{text}' is not a whole number")


def names(text: str | None) -> list[str] | None:
    """Comma-separated names as a list (None stays None); an empty name is refused."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise CrossEarthError(f"'{text}' has an empty name; separate names with commas")
    return names


def add_overwrite_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--overwrite`; `help` says what it replaces (never more than the command wrote)."""
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_progress_option(
    parser: argparse.ArgumentParser, default: str = "bar", help: str = ""
) -> None:
    """`--progress bar|json|none`; json prints one event per line (the plugin's protocol)."""
    parser.add_argument(
        "--progress",
        choices=PROGRESS_CHOICES,
        default=default,
        help=help or "progress display; json prints one event per line (for the plugin)",
    )
