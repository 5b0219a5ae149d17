#!/usr/bin/env bash
# phase.sh NAME CMD...: run CMD and say how long it took, so a first `make run` shows where its
# time goes (install, model build, stack start). Exits with CMD's status.
name=$1
shift
started=$(date +%s)
"$@"
status=$?
printf '[time] %-9s %4d s\n' "$name" $(( $(date +%s) - started )) >&2
exit $status
