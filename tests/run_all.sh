#!/usr/bin/env bash
# Every test, as README and CI run them: the whole suite on the broker the DESIGN order
# picks (the local Apache Kafka where java and mvn exist), then the smoke set (-m smoke:
# demo, alerts, dead letters, restart) on the embedded Tansu, the broker users meet in the
# demo. Both always run; the exit code is the first failure's, 0 when both pass.
set -uo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
"$python" -m pytest "$@"
whole=$?
SHEETBREAK_TEST_BROKER=tansu "$python" -m pytest -m smoke
smoke=$?
echo "whole suite: exit ${whole}; smoke set on Tansu: exit ${smoke}" >&2
if [ "$whole" -ne 0 ]; then exit "$whole"; fi
exit "$smoke"
