#!/usr/bin/env bash
# Starts a minimal single-node Ceph cluster (1 mon, 1 OSD, no mgr, auth off, pool size 1) and radosgw, all on
# 127.0.0.1, with every file under DIR. Prints nothing but errors; the S3 endpoint is http://127.0.0.1:RGW_PORT
# with the access key ACCESS_KEY / SECRET_KEY. Stop it with ceph-down.sh DIR.
# Usage: RGW_PORT=7480 MON_PORT=6789 ceph-up.sh DIR
# Needs (Debian): apt-get install --no-install-recommends ceph-mon ceph-osd radosgw curl
# OSD_STORE=memstore (default: data in RAM, capped by MEMSTORE_BYTES) or bluestore (a sparse file, for big runs).
set -euo pipefail
D=${1:?usage: ceph-up.sh DIR}
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-6789}
ACCESS_KEY=${ACCESS_KEY:-testaccesskey}
SECRET_KEY=${SECRET_KEY:-testsecretkey}
uuid() { cat /proc/sys/kernel/random/uuid; }
fail() { echo "ceph-up: $1" >&2; tail -n 15 "$D"/log/*.log >&2; exit 1; }
# A ceph command sent while the mon is still settling can be refused ("problem getting command descriptions",
# "wrong fsid"): the commands below are idempotent, so they are retried.
retry() { for attempt in 1 2 3 4 5; do "$@" && return 0; sleep 0.5; done; return 1; }

rm -rf "$D"; mkdir -p "$D"/{run,log,mon,osd,rgw}
FSID=$(uuid)
CONF="$D/ceph.conf"
# Settings that matter: paxos_propose_interval (boot in ~2 s instead of ~12 s), tcp_nodelay on beast (2-8 ms
# instead of ~44 ms per small response), mon_host given explicitly (no DNS SRV lookup), gc waits of seconds
# (the default keeps deleted multipart data for 2 h), mon_data_avail_crit 0 (run on a nearly full disk).
cat > "$CONF" <<CONF
[global]
fsid = $FSID
mon_host = v1:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr2 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = $D/run
admin_socket = $D/run/\$name.asok
pid_file = $D/run/\$name.pid
log_file = $D/log/\$name.log
mon_cluster_log_file = $D/log/cluster.log
crash_dir = $D/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
[mon]
paxos_propose_interval = 0.1
paxos_min_wait = 0.01
mon_data = $D/mon/\$id
[osd]
osd_data = $D/osd/\$id
osd_objectstore = ${OSD_STORE:-memstore}
memstore_device_bytes = ${MEMSTORE_BYTES:-1073741824}
bluestore_block_create = true
bluestore_block_size = ${BLUESTORE_BYTES:-10737418240}
bluestore_fsck_on_mount = false
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_memory_target = 536870912
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
# The OSD's own start-up crush commands can reach the mon before it knows the fsid ('wrong fsid', exit 250):
# the script places it in the crush map instead, before starting it.
osd_class_update_on_start = false
osd_crush_update_on_start = false
[client]
keyring = $D/keyring
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw_data = $D/rgw
rgw_thread_pool_size = 64
rgw_enable_usage_log = false
rgw_gc_obj_min_wait = 5
rgw_gc_processor_period = 5
rgw_gc_processor_max_time = 5
CONF

# mkfs wants a keyring even though auth is off.
ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
# --addv with an explicit v1 address: plain --add takes any port but 6789 for a msgr2 address, which a mon
# without msgr2 never answers on.
monmaptool --create --fsid "$FSID" --addv a "[v1:127.0.0.1:$MON_PORT]" "$D/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" 2>>"$D/log/mkfs.log" || fail "mon mkfs failed"
ceph-mon -c "$CONF" -i a 2>>"$D/log/mkfs.log" || fail "the monitor did not start"
retry timeout 60 ceph -c "$CONF" mon stat >/dev/null 2>>"$D/log/cli.log" || fail "the monitor did not answer"

OSD_UUID=$(uuid)
OSD_ID=$(retry timeout 60 ceph -c "$CONF" osd new "$OSD_UUID" 2>>"$D/log/cli.log") || fail "could not register the OSD"
mkdir -p "$D/osd/$OSD_ID"
retry timeout 60 ceph -c "$CONF" osd crush create-or-move "osd.$OSD_ID" 1.0 root=default host=localhost >/dev/null 2>>"$D/log/cli.log" || fail "could not place the OSD in the crush map"
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" 2>>"$D/log/mkfs.log" || fail "OSD mkfs failed"
ceph-osd -c "$CONF" -i "$OSD_ID" 2>>"$D/log/mkfs.log" || fail "the OSD did not start (exit $?)"
for i in $(seq 1 300); do
  timeout 10 ceph -c "$CONF" osd stat -f json 2>>"$D/log/cli.log" | grep -q '"num_up_osds":1' && break
  [ "$i" = 300 ] && fail "the OSD did not come up"
  sleep 0.2
done

radosgw -c "$CONF" -n client.rgw.a 2>>"$D/log/mkfs.log" || fail "radosgw did not start"
for i in $(seq 1 600); do
  curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/" && break
  [ "$i" = 600 ] && fail "radosgw did not answer on port $RGW_PORT"
  sleep 0.1
done
radosgw-admin -c "$CONF" user create --uid=test --display-name=test \
  --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null 2>>"$D/log/cli.log" || fail "could not create the S3 user"
