"""Engine commands in modules of their own: each `register(subparsers)` adds its sub-parser and
returns the function that runs it (the protocol of the `crossearth.commands` entry points)."""
