"""The models of lab.yaml, and loading it with every error at once as FILE:LINE:COL.

Values that LXD stores as strings (config keys, device keys) are normalised to LXD's
string form here, so that the rest of the program compares like with like.

Loading checks in three passes, and reports all three together:
1. types: each network, profile, container and haproxy entry is validated on its own, so one
   bad entry hides nothing of the others; in an entry that fails, each part that failed is left
   out or stood in for (`salvage_entry`), so that one bad field hides nothing of its siblings;
2. values: names, keys, paths, proxy addresses, bridge addresses, `source:` files of every entry;
3. cross-references, never calling "unknown" a name that is declared but invalid (its own errors
   are already reported).
Passes 2 and 3 never judge a part that failed pass 1, nor what depends on it (Declared.failed).

The modules: models (the pydantic models, the name patterns, the JSON Schema), salvage and locations
(pass 1: what is kept of an entry that fails; errors at FILE:LINE:COL), checks (pass 2), references,
proxies and subnets (pass 3), declared (what passes 2 and 3 share), loading (load_lab).
"""

from ..fields import lxd_string
from .checks import CHECKPOINT_PREFIX, LOCK_PREFIX, MAX_SOURCE_BYTES, read_source, source_problem
from .loading import check_lab, load_lab
from .models import (
    INSTANCE_NAME,
    LAB_NAME,
    NETWORK_NAME,
    PROFILE_NAME,
    PROJECT_NAME,
    REMOTE_NAME,
    REMOTES,
    TABLES,
    Adopt,
    Connection,
    Container,
    Existing,
    Lab,
    Network,
    OwnedProject,
    Profile,
    ProjectFeatures,
    expanded_devices,
    has_root_disk,
    json_schema,
    listen_address,
    override_json_schema,
)
from .proxies import Reach, proxied_frontends, proxy_reaches
from .subnets import Subnet, network_overlaps

__all__ = [
    "CHECKPOINT_PREFIX",
    "INSTANCE_NAME", "LAB_NAME", "LOCK_PREFIX", "MAX_SOURCE_BYTES", "NETWORK_NAME", "PROFILE_NAME", "PROJECT_NAME",
    "REMOTES", "REMOTE_NAME", "TABLES", "Adopt", "Connection", "Container", "Existing", "Lab", "Network",
    "OwnedProject", "Profile", "ProjectFeatures", "Reach", "Subnet", "check_lab", "expanded_devices", "has_root_disk",
    "json_schema", "listen_address", "load_lab", "lxd_string", "network_overlaps", "override_json_schema",
    "proxied_frontends", "proxy_reaches", "read_source", "source_problem",
]
