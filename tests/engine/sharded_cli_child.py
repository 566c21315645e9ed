"""`python -m tests.engine.sharded_cli_child SHARDS ARGS...`: the crossearth CLI in a child
process with a fixed number of shards (the default plan gives a small raster only as many
shards as workers), for tests that must kill a sharded run."""

import sys

from engine.cli import main
from engine.distributed import driver

if __name__ == "__main__":
    count = int(sys.argv[1])
    driver.default_shard_count = lambda *args, **kwargs: count  # type: ignore[assignment]
    sys.exit(main(sys.argv[2:]))
