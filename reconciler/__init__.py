"""reconciler: declarative desired state for LXD labs (lab.yaml -> plan -> apply)."""

import os

__version__ = "0.2.0"

# Pydantic scans every installed distribution's entry points for plugins at first use (~0.1 s of
# a plan's start-up); reconciler uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
