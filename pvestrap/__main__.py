"""`python -m pvestrap` (how the mesh mode and the first-boot hook run it)."""

from pvestrap.launch import entry

entry()
