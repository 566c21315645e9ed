"""`python -m tests.engine.cli_with_test_model ARGS...`: the crossearth CLI in a child process
with the tests' per-pixel model registered, for tests that must kill or limit a real process."""

import sys

from engine.cli import main
from engine.models.architectures import register_architecture

from .conftest import PixelLinear

if __name__ == "__main__":
    register_architecture(
        "test-pixel-linear", lambda config, card: PixelLinear(3, card.num_classes), replace=True
    )
    sys.exit(main(sys.argv[1:]))
