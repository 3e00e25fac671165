#!/usr/bin/env bash
# wan_bench.sh: `ferry sync` of a 1 GiB incompressible file over an emulated WAN link
# (two network namespaces joined by a veth pair; netem on both ends: 25 ms each way, so a
# 50 ms round trip, and 100 Mbit/s each way), compared with the link's nominal rate and with
# a plain single-connection TCP bulk transfer over the same link (and iperf3 if installed).
#
# Kernels built without sch_netem (e.g. some microVM kernels) get the same link from a small
# userspace emulator instead (`--emulator tun`, chosen automatically when netem is missing):
# each namespace gets a TUN device, and a python process forwards every IP packet between
# them with the same model as `netem delay D rate R limit L` (FIFO, serialisation at R
# counting 14 bytes of Ethernet framing per packet as netem does on a veth, then D of delay,
# tail drop beyond L packets queued). TCP on both ends then sees a true 50 ms, 100 Mbit/s
# path with 1500-byte packets.
#
# Run by hand, as root (never in CI):
#
#   CARGO_TARGET_DIR=/work/target-bench cargo build --release -p ferry-node
#   sudo examples/scripts/wan_bench.sh [--bigfile PATH] [--ferry PATH] [--work DIR] …
#
# Everything it creates (namespaces ferry-a and ferry-b, the veth pair, the processes it
# started, the target copy) is removed on exit; the big file is cached and reused.
# See --help for the options.

set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

NS_A=ferry-a            # the client (ferry sync) side
NS_B=ferry-b            # the server (ferry serve) side
VETH_A=veth-ferry-a
VETH_B=veth-ferry-b
TUN_A=tun-ferry-a
TUN_B=tun-ferry-b
ADDR_A=10.77.0.1
ADDR_B=10.77.0.2
PORT=7700               # ferry serve
BASE_PORT=7701          # the plain-TCP baseline
IPERF_PORT=7702
RSYNC_PORT=7703
FOLDER=big
TARGET_PCT=85           # ferry's rate must reach this % of the nominal link rate

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORKSPACE=$(cd "$SCRIPT_DIR/../.." && pwd)

delay_ms=25
rate_mbit=100
# netem's queue, in packets: it must hold at least a bandwidth-delay product (100 Mbit/s ×
# 50 ms ≈ 625 KB ≈ 430 full-size packets, more with the sender's burst) or the drops
# collapse TCP's throughput. netem's default of 1000 is marginal; 10000 leaves room.
limit_pkts=10000
work=/tmp/ferry-wan
tools=/work/shared/bench
bigfile=""
tree=0
with_rsync=0
scale=full
seed=1
baseline_mib=256
ferry=""
keep=0
emulator=auto

usage() {
    cat <<EOF
wan_bench.sh: ferry sync of a 1 GiB file over an emulated 100 Mbit/s, 50 ms RTT link

USAGE: $0 [OPTIONS]          (as root)

OPTIONS:
  --bigfile PATH     the file to send: reused if it exists, else generated there with
                     gen_tree.py bigfile (default: WORK/cache/bigfile-SCALE-seedSEED)
  --scale full|small size of a generated file: 1 GiB (default) or 128 MiB (quick checks)
  --tree             send the gen_tree.py tree instead (full: ~10,000 files / ~268 MiB;
                     small: 1,000 files; cached in WORK/cache/tree-SCALE-seedSEED): shows
                     what per-file round trips cost on a 50 ms path
  --seed N           gen_tree.py seed (default 1)
  --work DIR         working directory (default /tmp/ferry-wan); src/, dst/, homes and logs
                     live there; dst/ is removed at the end unless --keep
  --ferry PATH       ferry binary (default: \$CARGO_TARGET_DIR/release/ferry,
                     /work/target-bench/release/ferry, or <workspace>/target/release/ferry)
  --tools DIR        where gen_tree.py lives (default /work/shared/bench)
  --delay-ms N       one-way delay on each end (default 25)
  --rate-mbit N      rate limit on each end (default 100)
  --limit N          netem queue length in packets (default 10000)
  --emulator KIND    netem (veth pair + tc netem), tun (TUN devices + userspace emulator),
                     or auto (default: netem if the kernel has it, else tun)
  --baseline-mib N   size of the plain-TCP baseline transfer (default 256)
  --rsync            also time `rsync -a --delete` to an rsync daemon over the same link
  --keep             keep WORK/dst and the logs
  -h, --help         this help
EOF
}

die() {
    echo "wan_bench: error: $*" >&2
    exit 1
}

log() {
    echo "wan_bench: $*" >&2
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --bigfile) bigfile=${2:?--bigfile needs a value}; shift 2 ;;
        --tree) tree=1; shift ;;
        --rsync) with_rsync=1; shift ;;
        --scale) scale=${2:?--scale needs a value}; shift 2 ;;
        --seed) seed=${2:?--seed needs a value}; shift 2 ;;
        --work) work=${2:?--work needs a value}; shift 2 ;;
        --ferry) ferry=${2:?--ferry needs a value}; shift 2 ;;
        --tools) tools=${2:?--tools needs a value}; shift 2 ;;
        --delay-ms) delay_ms=${2:?--delay-ms needs a value}; shift 2 ;;
        --rate-mbit) rate_mbit=${2:?--rate-mbit needs a value}; shift 2 ;;
        --limit) limit_pkts=${2:?--limit needs a value}; shift 2 ;;
        --emulator) emulator=${2:?--emulator needs a value}; shift 2 ;;
        --baseline-mib) baseline_mib=${2:?--baseline-mib needs a value}; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

[[ $tree -eq 0 || -z "$bigfile" ]] || die "--tree and --bigfile exclude each other"
for n in "$seed" "$delay_ms" "$rate_mbit" "$limit_pkts" "$baseline_mib"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "expected a whole number, got '$n'"
done
case "$emulator" in
    auto|netem|tun) ;;
    *) die "--emulator must be auto, netem or tun, got '$emulator'" ;;
esac
case "$scale" in
    full) want_size=$((1024 * 1024 * 1024)) ;;
    small) want_size=$((128 * 1024 * 1024)) ;;
    *) die "--scale must be full or small, got '$scale'" ;;
esac

# ---------------------------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------------------------

[[ $(id -u) -eq 0 ]] || die "must run as root (it creates network namespaces and qdiscs)"
command -v ip >/dev/null || die "'ip' (iproute2) not found; apt-get install -y iproute2"
ip netns list >/dev/null 2>&1 ||
    die "'ip netns' is unavailable (no network-namespace support in this kernel or iproute2)"
command -v tc >/dev/null || die "'tc' (iproute2) not found; apt-get install -y iproute2"
command -v python3 >/dev/null || die "python3 not found"
[[ -f "$tools/gen_tree.py" ]] || die "$tools/gen_tree.py not found (pass --tools DIR)"
[[ -f "$tools/mirror_equal.py" ]] || die "$tools/mirror_equal.py not found (pass --tools DIR)"
[[ $with_rsync -eq 0 ]] || command -v rsync >/dev/null ||
    die "--rsync: rsync not found; apt-get install -y rsync"

if [[ -z "$ferry" ]]; then
    for c in "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/release/ferry}" \
        /work/target-bench/release/ferry "$WORKSPACE/target/release/ferry"; do
        if [[ -n "$c" && -x "$c" ]]; then ferry=$c; break; fi
    done
    [[ -n "$ferry" ]] || die "ferry binary not found; build it with
  CARGO_TARGET_DIR=/work/target-bench cargo build --release -p ferry-node   (or pass --ferry PATH)"
fi
[[ -x "$ferry" ]] || die "ferry binary $ferry is not executable"
ferry=$(readlink -f "$ferry")

# ---------------------------------------------------------------------------------------------
# Cleanup: only what this run created
# ---------------------------------------------------------------------------------------------

created_ns=()
pids=()

cleanup() {
    local rc=$?
    set +e
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    # Deleting a namespace deletes the veth end inside it, and with it the peer.
    for ns in "${created_ns[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
        ip netns del "$ns" 2>/dev/null && log "removed namespace $ns"
    done
    if [[ $keep -eq 0 && -n "${work:-}" && -d "$work/dst" ]]; then
        rm -rf "$work/dst"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A namespace left behind by an earlier run that was killed outright (SIGKILL skips the trap)
# would make `ip netns add` fail; the names are this script's own, so remove it.
for ns in "$NS_A" "$NS_B"; do
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
        log "removing namespace $ns left over from an earlier run"
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$ns"
    fi
done
for dev in "$VETH_A" "$TUN_A" "$TUN_B"; do
    if ip link show "$dev" >/dev/null 2>&1; then
        log "removing interface $dev left over from an earlier run"
        ip link del "$dev"
    fi
done

# ---------------------------------------------------------------------------------------------
# The link
# ---------------------------------------------------------------------------------------------

in_a() { ip netns exec "$NS_A" "$@"; }
in_b() { ip netns exec "$NS_B" "$@"; }

# `run_fg OUT ERR CMD ARGS…` runs CMD with stdout to the file OUT and stderr to ERR, in the
# background, and waits for it: bash runs a trap only between foreground commands, so a long
# foreground command would hold off the cleanup on SIGTERM until it ends. (The redirections
# are inside so that a trap running during the wait writes to the script's own stderr.)
run_fg() {
    local out=$1 err=$2
    shift 2
    "$@" >"$out" 2>"$err" &
    local p=$! rc=0
    pids+=("$p")
    wait "$p" || rc=$?
    unset 'pids[-1]'
    return "$rc"
}

log "creating namespaces $NS_A and $NS_B"
ip netns add "$NS_A"
created_ns+=("$NS_A")
ip netns add "$NS_B"
created_ns+=("$NS_B")
for ns in "$NS_A" "$NS_B"; do
    ip netns exec "$ns" ip link set lo up
done

netem="netem delay ${delay_ms}ms rate ${rate_mbit}mbit limit $limit_pkts"

# Tries the veth pair with netem on both ends; fails (leaving no veth behind) if the kernel
# has no netem.
link_netem() {
    ip link add "$VETH_A" type veth peer name "$VETH_B"
    ip link set "$VETH_A" netns "$NS_A"
    ip link set "$VETH_B" netns "$NS_B"
    local err
    if ! err=$(in_a tc qdisc add dev "$VETH_A" root $netem 2>&1) ||
        ! err=$(in_b tc qdisc add dev "$VETH_B" root $netem 2>&1); then
        in_a ip link del "$VETH_A" 2>/dev/null || true
        echo "$err"
        return 1
    fi
    in_a ip addr add "$ADDR_A/24" dev "$VETH_A"
    in_b ip addr add "$ADDR_B/24" dev "$VETH_B"
    in_a ip link set "$VETH_A" up
    in_b ip link set "$VETH_B" up
}

# The userspace link: creates a TUN device in each namespace (via setns) and forwards every
# packet between them like `netem delay D rate R limit L` on each direction. Prints "ready"
# once both devices exist; writes per-direction counters to its stats file every second and
# on SIGTERM.
EMU_PY='
import collections, ctypes, fcntl, os, select, signal, struct, sys, time
ns_a, dev_a, ns_b, dev_b, delay_ms, rate_mbit, limit, stats_path = sys.argv[1:9]
CLONE_NEWNET, TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x40000000, 0x400454CA, 0x0001, 0x1000
FRAMING = 14  # Ethernet header, counted by netem on a veth
libc = ctypes.CDLL(None, use_errno=True)
def tun_in(ns, name):
    nsfd = os.open("/var/run/netns/" + ns, os.O_RDONLY)
    if libc.setns(nsfd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno(); raise OSError(e, "setns %s: %s" % (ns, os.strerror(e)))
    os.close(nsfd)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd
a, b = tun_in(ns_a, dev_a), tun_in(ns_b, dev_b)
delay, rate, limit = float(delay_ms) / 1e3, float(rate_mbit) * 1e6 / 8, int(limit)
class Dir:
    def __init__(self, name, out):
        self.name, self.out, self.q, self.free_at = name, out, collections.deque(), 0.0
        self.pkts = self.bytes = self.drops = self.wdrops = self.maxq = 0
links = {a: Dir("a->b", b), b: Dir("b->a", a)}
stop = False
def on_term(*_):
    global stop; stop = True
signal.signal(signal.SIGTERM, on_term); signal.signal(signal.SIGINT, on_term)
def dump():
    with open(stats_path + ".tmp", "w") as f:
        for d in links.values():
            f.write("%s pkts=%d bytes=%d queue_drops=%d write_drops=%d max_queue=%d\n"
                    % (d.name, d.pkts, d.bytes, d.drops, d.wdrops, d.maxq))
    os.replace(stats_path + ".tmp", stats_path)
print("ready", flush=True)
last_dump = time.monotonic()
while not stop:
    now = time.monotonic()
    nxt = None
    for d in links.values():
        q = d.q
        while q and q[0][0] <= now:
            try:
                os.write(d.out, q.popleft()[1])
            except OSError:
                d.wdrops += 1
        if q and (nxt is None or q[0][0] < nxt):
            nxt = q[0][0]
    timeout = 0.5 if nxt is None else max(0.0, nxt - now)
    try:
        ready, _, _ = select.select([a, b], [], [], timeout)
    except InterruptedError:
        continue
    now = time.monotonic()
    for fd in ready:
        d = links[fd]
        for _ in range(256):
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            if len(d.q) >= limit:
                d.drops += 1
                continue
            start = d.free_at if d.free_at > now else now
            d.free_at = start + (len(pkt) + FRAMING) / rate
            d.q.append((d.free_at + delay, pkt))
            d.pkts += 1; d.bytes += len(pkt)
            if len(d.q) > d.maxq: d.maxq = len(d.q)
    if now - last_dump >= 1.0:
        dump(); last_dump = now
dump()
'

link_tun() {
    : >"$work/emulator.out"
    python3 -c "$EMU_PY" "$NS_A" "$TUN_A" "$NS_B" "$TUN_B" "$delay_ms" "$rate_mbit" \
        "$limit_pkts" "$work/emulator.stats" >"$work/emulator.out" 2>"$work/emulator.err" &
    emu_pid=$!
    pids+=("$emu_pid")
    for _ in $(seq 100); do
        grep -q ready "$work/emulator.out" 2>/dev/null && break
        kill -0 "$emu_pid" 2>/dev/null || break
        sleep 0.05
    done
    grep -q ready "$work/emulator.out" ||
        die "the link emulator did not start: $(tail -n 5 "$work/emulator.err")"
    # txqueuelen: the kernel-to-emulator queue of each TUN device; it must not be the
    # bottleneck (the emulator applies the netem limit itself).
    in_a ip addr add "$ADDR_A/24" dev "$TUN_A"
    in_b ip addr add "$ADDR_B/24" dev "$TUN_B"
    in_a ip link set "$TUN_A" mtu 1500 txqueuelen "$limit_pkts" up
    in_b ip link set "$TUN_B" mtu 1500 txqueuelen "$limit_pkts" up
}

mkdir -p "$work"
work=$(readlink -f "$work")
link_desc=""
why_tun="--emulator tun"
if [[ "$emulator" != tun ]]; then
    log "trying veth pair $VETH_A <-> $VETH_B with tc qdisc add dev <veth> root $netem (both ends)"
    if netem_err=$(link_netem); then
        emulator=netem
        link_desc="veth pair; on each end: tc qdisc … root $netem"
    elif [[ "$emulator" == netem ]]; then
        die "tc netem failed: $netem_err (is sch_netem built into this kernel? try --emulator tun)"
    else
        log "tc netem unavailable ($netem_err); using the userspace TUN link emulator instead"
        emulator=tun
        why_tun="tc netem unavailable: ${netem_err//$'\n'/ }"
    fi
fi
if [[ "$emulator" == tun ]]; then
    log "TUN devices $TUN_A ($NS_A) and $TUN_B ($NS_B) joined by a userspace link emulator"
    link_tun
    link_desc="TUN pair + userspace emulator ($why_tun); each direction: \
delay ${delay_ms}ms rate ${rate_mbit}mbit (+14 B framing/packet) limit $limit_pkts, MTU 1500"
fi
log "link: $link_desc"

# Round-trip time: ping if installed, else the time a TCP connect to a closed port takes to
# be refused (SYN out, RST back: one round trip).
RTT_PY='
import socket, statistics, sys, time
v = []
for _ in range(5):
    s = socket.socket(); s.settimeout(5); t0 = time.monotonic()
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
    except ConnectionRefusedError:
        v.append((time.monotonic() - t0) * 1e3)
    finally:
        s.close()
print("%.1f" % statistics.median(v) if v else "")
'
if in_a sh -c 'command -v ping' >/dev/null 2>&1; then
    rtt_how="ping"
    rtt=$(in_a ping -c 3 -i 0.2 -q "$ADDR_B" 2>/dev/null |
        awk -F/ '/^rtt|^round-trip/ {print $5}') || true
else
    rtt_how="TCP connect to a closed port, median of 5"
    rtt=$(in_a python3 -c "$RTT_PY" "$ADDR_B" 9) || true
fi
[[ -n "$rtt" ]] || die "no reply from $ADDR_B over the emulated link ($rtt_how)"
log "RTT ${rtt} ms ($rtt_how; expected ~$((2 * delay_ms)) ms)"

sysctl_report() {
    local ns=$1
    ip netns exec "$ns" sysctl -n net.ipv4.tcp_rmem net.ipv4.tcp_wmem \
        net.ipv4.tcp_congestion_control net.ipv4.tcp_slow_start_after_idle 2>/dev/null |
        paste -sd'|' | awk -F'|' '{printf "tcp_rmem=[%s] tcp_wmem=[%s] cc=%s slow_start_after_idle=%s", $1, $2, $3, $4}'
}
sys_a=$(sysctl_report "$NS_A")
sys_b=$(sysctl_report "$NS_B")
sys_core="rmem_max=$(sysctl -n net.core.rmem_max) wmem_max=$(sysctl -n net.core.wmem_max)"
log "$NS_A: $sys_a"
log "$NS_B: $sys_b"
log "host: $sys_core"

# ---------------------------------------------------------------------------------------------
# The source and the homes
# ---------------------------------------------------------------------------------------------

dst="$work/dst"
rm -rf "$dst"
mkdir -p "$dst"
if [[ $tree -eq 1 ]]; then
    # The cached tree itself is SRC (ferry only reads it).
    src="$work/cache/tree-$scale-seed$seed"
    if [[ -d "$src" ]]; then
        log "reusing the tree $src"
    else
        mkdir -p "$work/cache"
        log "generating the tree $src with gen_tree.py tree --scale $scale --seed $seed (once)…"
        rm -rf "$src.tmp"
        python3 "$tools/gen_tree.py" tree "$src.tmp" --scale "$scale" --seed "$seed" >/dev/null
        mv "$src.tmp" "$src"
    fi
    read -r nfiles size < <(find "$src" -type f -printf '%s\n' | awk '{n++; s += $1} END {print n, s}')
    source_desc="$src ($nfiles files, $size bytes; gen_tree.py tree --scale $scale; page cache warm)"
    # Warm the page cache so the disk is out of the measurement.
    find "$src" -type f -exec cat {} + >/dev/null
else
    [[ -n "$bigfile" ]] || bigfile="$work/cache/bigfile-$scale-seed$seed"
    if [[ -f "$bigfile" ]]; then
        size=$(stat -c %s "$bigfile")
        log "reusing $bigfile ($size bytes)"
    else
        mkdir -p "$(dirname "$bigfile")"
        log "generating $bigfile with gen_tree.py bigfile --scale $scale --seed $seed (once)…"
        python3 "$tools/gen_tree.py" bigfile "$bigfile.tmp" --scale "$scale" --seed "$seed" >/dev/null
        mv "$bigfile.tmp" "$bigfile"
        size=$(stat -c %s "$bigfile")
        [[ $size -eq $want_size ]] || die "gen_tree.py made $size bytes, expected $want_size"
    fi
    bigfile=$(readlink -f "$bigfile")
    src="$work/src"
    rm -rf "$src"
    mkdir -p "$src"
    # SRC holds only the big file: a hard link if possible, else a copy.
    ln "$bigfile" "$src/bigfile" 2>/dev/null || cp "$bigfile" "$src/bigfile"
    source_desc="$bigfile ($size bytes, incompressible; page cache warm)"
    # Warm the page cache so the disk is out of the measurement.
    cat "$src/bigfile" >/dev/null
fi

home_a="$work/home-a"
home_b="$work/home-b"
client_id=$("$ferry" id --home "$home_a" 2>/dev/null) || die "ferry id --home $home_a failed"
[[ "$client_id" =~ ^[A-Z0-9-]+$ ]] || die "ferry id printed '$client_id', not a node id"

# ---------------------------------------------------------------------------------------------
# Baseline: one plain TCP connection, the same link, default socket buffers
# ---------------------------------------------------------------------------------------------

# The receiver prints "<bytes> <seconds from accept to EOF>"; the sender writes N MiB.
RECV_PY='
import socket, sys, time
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2]))); ls.listen(1)
print("ready", flush=True)
c, _ = ls.accept(); t0 = time.monotonic(); n = 0; buf = bytearray(1 << 20)
while True:
    k = c.recv_into(buf)
    if not k: break
    n += k
print(n, time.monotonic() - t0, flush=True)
'
SEND_PY='
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
block = bytes(1 << 20); t0 = time.monotonic()
for _ in range(int(sys.argv[3])): s.sendall(block)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(time.monotonic() - t0, flush=True)
'

log "baseline: ${baseline_mib} MiB over one plain TCP connection $NS_A -> $NS_B…"
in_b python3 -c "$RECV_PY" "$ADDR_B" "$BASE_PORT" >"$work/baseline.recv" &
pids+=($!)
for _ in $(seq 100); do
    grep -q ready "$work/baseline.recv" 2>/dev/null && break
    sleep 0.05
done
grep -q ready "$work/baseline.recv" || die "the baseline receiver did not start"
run_fg "$work/baseline.send" "$work/baseline.err" \
    in_a python3 -c "$SEND_PY" "$ADDR_B" "$BASE_PORT" "$baseline_mib" ||
    die "the baseline sender failed: $(tail -n 5 "$work/baseline.err")"
base_send_s=$(tail -n 1 "$work/baseline.send")
wait "${pids[-1]}" || die "the baseline receiver failed"
unset 'pids[-1]'
read -r base_bytes base_recv_s < <(tail -n 1 "$work/baseline.recv")
base_mbit=$(awk -v b="$base_bytes" -v s="$base_recv_s" 'BEGIN {printf "%.1f", b * 8 / s / 1e6}')
log "baseline: $base_bytes bytes in ${base_recv_s} s at the receiver (sender ${base_send_s} s): $base_mbit Mbit/s"

iperf_mbit=""
if command -v iperf3 >/dev/null; then
    log "iperf3: 10 s, one stream $NS_A -> $NS_B…"
    in_b iperf3 -s -1 -B "$ADDR_B" -p "$IPERF_PORT" >/dev/null 2>&1 &
    pids+=($!)
    sleep 0.5
    if run_fg "$work/iperf3.json" "$work/iperf3.err" \
        in_a iperf3 -c "$ADDR_B" -p "$IPERF_PORT" -t 10 -J; then
        iperf_mbit=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"]/1e6))' "$work/iperf3.json" 2>/dev/null) ||
            iperf_mbit=""
        log "iperf3: ${iperf_mbit:-?} Mbit/s received"
    else
        log "iperf3 failed (see $work/iperf3.json); continuing without it"
    fi
    wait "${pids[-1]}" 2>/dev/null || true
    unset 'pids[-1]'
else
    log "iperf3 not installed (apt-get install -y iperf3); the python baseline stands alone"
fi

# ---------------------------------------------------------------------------------------------
# ferry
# ---------------------------------------------------------------------------------------------

log "starting ferry serve --no-fsync in $NS_B on $ADDR_B:$PORT"
: >"$work/serve.out"
in_b "$ferry" serve --home "$home_b" --listen "$ADDR_B:$PORT" --folder "$FOLDER=$dst" \
    --peer "$client_id" --no-fsync >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
pids+=("$serve_pid")
for _ in $(seq 200); do
    [[ -s "$work/serve.out" ]] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.05
done
read -r word listen_addr _ server_id <"$work/serve.out" ||
    die "ferry serve printed no 'listening' line; its log:
$(tail -n 20 "$work/serve.log")"
[[ "$word" == listening && -n "$server_id" ]] ||
    die "ferry serve's first line is not 'listening ADDR node ID': $(head -n 1 "$work/serve.out")"
log "ferry serve listening on $listen_addr as $server_id"

# Sample the client's and the server's TCP state during the transfer: cwnd, RTT, whether the
# sender was limited by the receive window, its send buffer or the application.
sample_tcp() {
    while true; do
        echo "@ $(date +%s.%N)"
        in_a ss -tinm state established "( dport = :$PORT )" 2>/dev/null | sed 's/^/A /'
        in_b ss -tinm state established "( sport = :$PORT )" 2>/dev/null | sed 's/^/B /'
        sleep 1
    done
}
sample_tcp >"$work/ss.log" 2>&1 &
sampler_pid=$!
pids+=("$sampler_pid")

url="ferry://$server_id@$ADDR_B:$PORT/$FOLDER"
log "ferry sync --no-fsync --stats $src $url"
start=$(date +%s.%N)
if ! run_fg "$work/sync.out" "$work/sync.err" \
    in_a "$ferry" sync --home "$home_a" --no-fsync --stats "$src" "$url"; then
    die "ferry sync failed; its stderr:
$(tail -n 20 "$work/sync.err")
ferry serve's log:
$(tail -n 20 "$work/serve.log")"
fi
end=$(date +%s.%N)
kill "$sampler_pid" 2>/dev/null || true
wall=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')

read -r wire_out wire_in < <(awk -F'[:/]' '/^wire bytes out \/ in/ {gsub(/ /, ""); print $3, $4}' \
    "$work/sync.out") || true
[[ -n "${wire_out:-}" ]] || die "no 'wire bytes out / in' line in ferry sync --stats output:
$(cat "$work/sync.out")"

if [[ $tree -eq 1 ]]; then
    python3 "$tools/mirror_equal.py" "$src" "$dst" >"$work/verify.out" 2>&1 ||
        die "VERIFICATION FAILED: $dst differs from $src:
$(head -n 20 "$work/verify.out")"
else
    cmp -s "$src/bigfile" "$dst/bigfile" ||
        die "VERIFICATION FAILED: $dst/bigfile differs from $src/bigfile"
fi
log "verified: $dst is identical to the source"

# ---------------------------------------------------------------------------------------------
# rsync over the same link (--rsync)
# ---------------------------------------------------------------------------------------------

rsync_report=""
if [[ $with_rsync -eq 1 ]]; then
    dst_r="$work/dst-rsync"
    rm -rf "$dst_r"
    mkdir -p "$dst_r"
    cat >"$work/rsyncd.conf" <<CONF
# generated by wan_bench.sh
log file = $work/rsyncd.log
[bench]
    path = $dst_r
    use chroot = no
    read only = no
    uid = root
    gid = root
CONF
    in_b rsync --daemon --no-detach --config="$work/rsyncd.conf" --address="$ADDR_B" \
        --port="$RSYNC_PORT" </dev/null >/dev/null 2>"$work/rsyncd.err" &
    pids+=($!)
    for _ in $(seq 100); do
        in_a bash -c "exec 3<>/dev/tcp/$ADDR_B/$RSYNC_PORT" 2>/dev/null && break
        sleep 0.1
    done
    log "rsync -a --delete --stats $src/ rsync://$ADDR_B:$RSYNC_PORT/bench/"
    r_start=$(date +%s.%N)
    run_fg "$work/rsync.out" "$work/rsync.err" \
        in_a rsync -a --delete --stats "$src/" "rsync://$ADDR_B:$RSYNC_PORT/bench/" ||
        die "rsync failed: $(tail -n 20 "$work/rsync.err")"
    r_end=$(date +%s.%N)
    python3 "$tools/mirror_equal.py" "$src" "$dst_r" >"$work/verify-rsync.out" 2>&1 ||
        die "rsync's copy $dst_r differs from $src: $(head -n 20 "$work/verify-rsync.out")"
    rm -rf "$dst_r"
    r_sent=$(awk -F: '/^Total bytes sent/ {gsub(/[ ,]/, "", $2); print $2}' "$work/rsync.out")
    r_recv=$(awk -F: '/^Total bytes received/ {gsub(/[ ,]/, "", $2); print $2}' "$work/rsync.out")
    rsync_report=$(awk -v a="$r_start" -v b="$r_end" -v sent="$r_sent" -v recv="$r_recv" \
        -v fwall="$wall" 'BEGIN {
        w = b - a
        printf "rsync -a --delete (daemon in the far namespace, same link, verified):\n"
        printf "  wall %.3f s, bytes sent / received %.0f / %.0f, %.1f Mbit/s; ferry / rsync wall %.2f×",
            w, sent, recv, sent * 8 / w / 1e6, fwall / w
    }')
    log "$rsync_report"
fi

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

ss_summary=$(awk -v start="$start" '
    /^@ / { t = $2 }
    /^A / && /cwnd:/ {
        a++
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^bytes_acked:/) {
                split($i, x, ":")
                if (x[2] > 1048576 && !ft) { ft = t; fa = x[2] }
                lt = t; la = x[2]
            }
            if ($i ~ /^cwnd:/) { split($i, x, ":"); if (x[2] + 0 > cwnd) cwnd = x[2] + 0 }
            if ($i ~ /^rwnd_limited:/) rl = $i
            if ($i ~ /^sndbuf_limited:/) sl = $i
            if ($i ~ /^busy:/) busy = $i
            if ($i ~ /^notsent:/) { split($i, x, ":"); ns += x[2]; nsn++ }
            if ($i ~ /^skmem:/) { match($i, /tb[0-9]+/); tb = substr($i, RSTART + 2, RLENGTH - 2) }
        }
    }
    /^B / && /skmem:/ {
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^skmem:/) { match($i, /rb[0-9]+/); rb = substr($i, RSTART + 2, RLENGTH - 2) }
            if ($i ~ /^rcv_space:/) { split($i, x, ":"); rs = x[2] }
        }
    }
    END {
        printf "samples=%d max_cwnd=%s pkts sender: %s %s %s sndbuf=%s B avg_notsent=%s B; receiver: rcvbuf=%s B rcv_space=%s B",
            a, cwnd, busy, rl, sl, tb, (nsn ? int(ns / nsn) : "-"), rb, rs
        if (ft && lt > ft)
            printf "\n           first MiB acked %.1f s after the sync started; from then on %.1f Mbit/s (bytes_acked over %.0f s)",
                ft - start, (la - fa) * 8 / (lt - ft) / 1e6, lt - ft
    }' "$work/ss.log")

emu_stats=""
if [[ "$emulator" == tun && -f "$work/emulator.stats" ]]; then
    kill -TERM "$emu_pid" 2>/dev/null || true
    wait "$emu_pid" 2>/dev/null || true
    emu_stats=$(paste -sd';' "$work/emulator.stats" | sed 's/;/; /')
fi

report=$(awk -v out="$wire_out" -v in_="$wire_in" -v wall="$wall" -v size="$size" \
    -v link="$rate_mbit" -v base="$base_mbit" -v iperf="$iperf_mbit" -v target="$TARGET_PCT" '
BEGIN {
    rate = out * 8 / wall / 1e6
    good = size * 8 / wall / 1e6
    pct = 100 * rate / link
    printf "bytes transferred (wire out / in):   %.0f / %.0f\n", out, in_
    printf "source size:                         %.0f (wire overhead %.2f%%)\n", size, 100 * (out - size) / size
    printf "wall time (ferry sync):              %.3f s\n", wall
    printf "achieved rate (wire out):            %.1f Mbit/s  (goodput %.1f Mbit/s)\n", rate, good
    printf "vs the %d Mbit/s link:              %.1f%%   target >= %d%%   %s\n", link, pct, target, (pct >= target ? "PASS" : "MISS")
    printf "vs plain-TCP baseline (%.1f Mbit/s): %.1f%%\n", base, 100 * rate / base
    if (iperf != "") printf "vs iperf3 (%.1f Mbit/s):            %.1f%%\n", iperf, 100 * rate / iperf
    printf "ideal wall at %d Mbit/s:            %.1f s\n", link, out * 8 / (link * 1e6)
}')

cat <<EOF

==== wan_bench: ferry over an emulated WAN ====
link:      $NS_A ($ADDR_A) <-> $NS_B ($ADDR_B): $link_desc
           RTT ${rtt} ms ($rtt_how)${emu_stats:+
emulator:  $emu_stats}
sysctl:    $NS_A: $sys_a
           $NS_B: $sys_b
           host: $sys_core
ferry:     $ferry ($("$ferry" --version 2>/dev/null || echo "?"))
           serve --no-fsync in $NS_B; sync --no-fsync --stats in $NS_A
source:    $source_desc
baseline:  ${baseline_mib} MiB over one python TCP connection: $base_mbit Mbit/s${iperf_mbit:+; iperf3: $iperf_mbit Mbit/s}
tcp:       $ss_summary
           (ss -tinm every second: $work/ss.log)

$report
${rsync_report:+
$rsync_report
}
ferry sync --stats:
$(sed 's/^/  /' "$work/sync.out")
EOF

if [[ $keep -eq 1 ]]; then
    log "kept $work (dst/, serve.log, sync.out, ss.log)"
fi
