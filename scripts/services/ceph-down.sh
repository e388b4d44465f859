#!/usr/bin/env bash
# Stops the daemons ceph-up.sh started in DIR (by the pids in their pid files) and removes DIR. The cluster is
# throwaway, so whatever has not exited 2 s after SIGTERM gets SIGKILL (radosgw alone would take ~5 s).
# Usage: ceph-down.sh DIR
D=${1:?usage: ceph-down.sh DIR}
pids=()
for f in "$D"/run/client.rgw.a.pid "$D"/run/osd.*.pid "$D"/run/mon.*.pid; do
  [ -f "$f" ] && pids+=("$(cat "$f")")
done
if [ ${#pids[@]} -gt 0 ]; then
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
  kill -9 "${pids[@]}" 2>/dev/null || true
fi
rm -rf "$D"
