"""Sharded inference on Ray: one job split into shards of tile rows, run by model workers on
one or many machines, with the same result as a single-process run.

Importing this package does not import Ray; a sharded run does.
"""

from engine.distributed.driver import ShardedResult, segment_sharded

__all__ = ["ShardedResult", "segment_sharded"]
