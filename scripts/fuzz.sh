#!/usr/bin/env bash
# Hypothesis exploring: the property tests (marker `property`) run again and again under the "fuzz"
# profile (random examples, a new seed each round) until FUZZ_MINUTES have passed or one fails. A
# failure is printed as the @example(...) to paste above its test, so CI replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${FUZZ_MINUTES:-10}
end=$((SECONDS + 60 * minutes))
round=0
while ((SECONDS < end)); do
    round=$((round + 1))
    echo "fuzz round $round ($(((end - SECONDS + 59) / 60)) min left)"
    RECONCILER_HYPOTHESIS_PROFILE=fuzz .venv/bin/python -m pytest -q -x -m property -p no:cacheprovider "${@:-tests}"
done
echo "fuzz: no failure in $round rounds ($minutes min)"
