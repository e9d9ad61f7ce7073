"""python -m metakit: the metakit command (also what `torchrun -m metakit` runs on each rank)."""
from .cli import main

raise SystemExit(main())  # the exit status tells the caller (and torchrun) that a command failed
