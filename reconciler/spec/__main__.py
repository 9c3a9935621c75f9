"""`python -m reconciler.spec [--override]`: the JSON Schema of lab.yaml (or of an override) on stdout."""

import json
import sys

from .models import json_schema, override_json_schema

made = override_json_schema() if sys.argv[1:] == ["--override"] else json_schema()
print(json.dumps(made, indent=2, sort_keys=True))
