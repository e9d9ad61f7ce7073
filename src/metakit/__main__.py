"""python -m metakit: the metakit command."""
from .cli import main

main()
