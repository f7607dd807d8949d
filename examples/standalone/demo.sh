#!/usr/bin/env bash
# The Plexus standalone demo: plexusd and real CNI plugins, no Kubernetes.
#
# A "node" is a network namespace of its own (plexusd runs in it, so the bridges and host-side
# veths the plugins create appear there); each "pod" is another namespace. Nothing is created in
# the machine's own network namespace. The pods are attached exactly as a container runtime
# attaches them: the `plexus` shim is executed with the CNI environment and the plugin config of
# a 00-plexus.conflist on stdin.
#
# Everything the demo makes (namespaces, /tmp/plexus-demo, plexusd) is removed on exit, also on
# failure and Ctrl-C. Leftovers of a run that was killed outright: `make clean-demo`.
#
# Run as root: `make demo` (or examples/standalone/demo.sh after `make deps`).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
# The shim as shipped: static, and without libc on x86_64 (`make build` puts it there).
SHIM_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/static-shim/debug
CNI_BIN=/usr/lib/cni
# Fixed, because the host-local IPAM configs in the (static) manifests name
# /tmp/plexus-demo/ipam as their dataDir. plexusd.yaml names the same paths.
WORK=/tmp/plexus-demo
SOCK=$WORK/plexus.sock
# The namespaces all start with plexus-demo-, which is what `make clean-demo` removes.
PREFIX=plexus-demo
NODE=$PREFIX-node-$$

# ---------------------------------------------------------------------------------------------
# Output helpers

if [[ -t 1 ]]; then BOLD=$'\e[1m' DIM=$'\e[2m' RED=$'\e[31m' GREEN=$'\e[32m' RESET=$'\e[0m'
else BOLD='' DIM='' RED='' GREEN='' RESET=''; fi

section() { printf '\n%s== %s ==%s\n' "$BOLD" "$*" "$RESET"; }
step() { printf '%s-- %s%s\n' "$BOLD" "$*" "$RESET"; }
say() { printf '%s\n' "$*"; }
ok() { printf '%s✔ %s%s\n' "$GREEN" "$*" "$RESET"; }
fail() { printf '%s✘ %s%s\n' "$RED" "$*" "$RESET" >&2; exit 1; }
# Runs a command, printing it first, and indents its output.
show() {
    printf '%s$ %s%s\n' "$DIM" "$*" "$RESET"
    "$@" 2>&1 | sed 's/^/    /'
}
indent() { sed 's/^/    /'; }

# ---------------------------------------------------------------------------------------------
# Cleanup: stop plexusd by its PID, delete what this run created. Runs once, on any exit.

PLEXUSD_PID=''
CREATED_WORK=0
NAMESPACES=()

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    if [[ $status -eq 130 || $status -eq 143 ]]; then
        printf '\n%sInterrupted.%s\n' "$RED" "$RESET" >&2
    elif [[ $status -ne 0 && $CREATED_WORK -eq 1 && -f $WORK/plexusd.log ]]; then
        printf '\n%sThe demo failed (exit %s). The end of plexusd'"'"'s log:%s\n' "$RED" "$status" "$RESET" >&2
        tail -n 20 "$WORK/plexusd.log" | indent >&2
    fi
    section "Cleanup"
    if [[ -n $PLEXUSD_PID ]] && kill -0 "$PLEXUSD_PID" 2>/dev/null; then
        kill -TERM "$PLEXUSD_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$PLEXUSD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$PLEXUSD_PID" 2>/dev/null && kill -KILL "$PLEXUSD_PID" 2>/dev/null
        wait "$PLEXUSD_PID" 2>/dev/null
        say "stopped plexusd (pid $PLEXUSD_PID)"
    fi
    local ns
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null && say "deleted network namespace $ns"
    done
    if [[ $CREATED_WORK -eq 1 ]]; then
        rm -rf "$WORK" && say "removed $WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Preconditions

[[ $EUID -eq 0 ]] || { echo "demo.sh: must run as root (it creates network namespaces)" >&2; exit 1; }

# Installs a Debian package when the file it provides is missing.
need() {
    local file=$1 package=$2
    if [[ $file == */* ]]; then [[ -x $file ]] && return 0
    else command -v "$file" >/dev/null && return 0; fi
    say "installing $package"
    if [[ -z ${APT_UPDATED:-} ]]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
}
need ip iproute2
need ping iputils-ping
need jq jq
need curl curl
need "$CNI_BIN/bridge" containernetworking-plugins

# Builds unless each binary is newer than every source file it was built from (cargo's
# dep-info file next to it lists them) and than the Cargo.toml files.
fresh() {
    local binary=$1 crate=$2 line
    local -a sources
    [[ -x $binary && -f $binary.d ]] || return 1
    line=$(head -n 1 "$binary.d")
    read -r -a sources <<<"${line#*: }"
    [[ -z $(find "${sources[@]}" "$ROOT/Cargo.toml" "$ROOT/$crate/Cargo.toml" -newer "$binary" -print -quit 2>&1) ]]
}
binaries_fresh() {
    fresh "$BIN/plexusd" controller && fresh "$SHIM_BIN/plexus" shim
}
if ! binaries_fresh; then
    say "sources are newer than the binaries: make build"
    (cd "$ROOT" && make --no-print-directory --quiet build)
fi

if ! mkdir "$WORK" 2>/dev/null; then
    fail "$WORK exists: another demo is running, or one was killed; \`make clean-demo\` removes its leftovers"
fi
CREATED_WORK=1

# ---------------------------------------------------------------------------------------------
section "Setup: a node namespace, plexusd in it, the runtime's config"

# Copies, so the checked-in files are never modified (the demo adds a manifest later).
mkdir -p "$WORK/ipam" "$WORK/records"
cp -r "$HERE/net.d" "$HERE/manifests" "$WORK/"
cp "$HERE/plexusd.yaml" "$WORK/plexusd.yaml"

# The conflist the runtime finds first in its conf dir; plexusd skips it when it looks for the
# cluster network. The runtime passes its plugin, with the list's name and version, on stdin.
cat >"$WORK/net.d/00-plexus.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "plexus",
  "plugins": [{ "type": "plexus", "socketPath": "$SOCK" }]
}
EOF
SHIM_CONF=$(jq -c '{cniVersion, name} + .plugins[0]' "$WORK/net.d/00-plexus.conflist")

NAMESPACES+=("$NODE")
ip netns add "$NODE"
ip -n "$NODE" link set lo up
# macvlan-net's master "ext0": one end of a veth pair whose both ends stay in the node
# namespace (a stand-in for the node's second NIC).
ip -n "$NODE" link add ext0 type veth peer name ext0-peer
ip -n "$NODE" link set ext0 up
ip -n "$NODE" link set ext0-peer up
say "node namespace:  $NODE (lo; ext0, the macvlan master, paired with ext0-peer)"
say "work directory:  $WORK (conf dir, manifests, records, IPAM, socket, plexusd.log)"
say "shim stdin:      $SHIM_CONF"

NO_COLOR=1 ip netns exec "$NODE" "$BIN/plexusd" --config "$WORK/plexusd.yaml" >"$WORK/plexusd.log" 2>&1 &
PLEXUSD_PID=$!
for _ in $(seq 100); do
    curl -sf --unix-socket "$SOCK" http://plexus/readyz >/dev/null 2>&1 && break
    kill -0 "$PLEXUSD_PID" 2>/dev/null || fail "plexusd exited at start"
    sleep 0.1
done
curl -sf --unix-socket "$SOCK" http://plexus/readyz >/dev/null || fail "plexusd is not ready after 10 s"
say "plexusd:         pid $PLEXUSD_PID, listening on $SOCK"
show curl -s --unix-socket "$SOCK" http://plexus/readyz

# ---------------------------------------------------------------------------------------------
# The pods. The UIDs are the ones in manifests/20-pods.yaml and later/30-late-net.yaml.

declare -A POD_NS POD_ID POD_UID
POD_UID[pod-a]=6f1c3a52-5d0e-4b7a-9c1e-0a0000000001
POD_UID[pod-b]=6f1c3a52-5d0e-4b7a-9c1e-0a0000000002
POD_UID[pod-c]=6f1c3a52-5d0e-4b7a-9c1e-0a0000000003
ADDED=()

new_pod() {
    local pod=$1
    POD_NS[$pod]=$PREFIX-$pod-$$
    POD_ID[$pod]=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    NAMESPACES+=("${POD_NS[$pod]}")
    ip netns add "${POD_NS[$pod]}"
    ip -n "${POD_NS[$pod]}" link set lo up
}

# Executes the shim as a container runtime does.
cni() {
    local command=$1 pod=$2
    local id=${POD_ID[$pod]}
    env -i PATH="$PATH" \
        CNI_COMMAND="$command" \
        CNI_CONTAINERID="$id" \
        CNI_NETNS="/run/netns/${POD_NS[$pod]}" \
        CNI_IFNAME=eth0 \
        CNI_PATH="$CNI_BIN" \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$pod;K8S_POD_INFRA_CONTAINER_ID=$id;K8S_POD_UID=${POD_UID[$pod]}" \
        "$SHIM_BIN/plexus" <<<"$SHIM_CONF"
}

network_status() {
    curl -sf --unix-socket "$SOCK" "http://plexus/v1/network-status/${POD_ID[$1]}"
}

add_pod() {
    local pod=$1 result
    new_pod "$pod"
    step "ADD $pod (netns ${POD_NS[$pod]}, container ${POD_ID[$pod]:0:12}…)"
    if ! result=$(cni ADD "$pod"); then
        say "ADD failed; the shim printed:"
        jq . <<<"$result" 2>/dev/null | indent || say "    $result"
        fail "ADD $pod failed"
    fi
    ADDED+=("$pod")
    show ip -n "${POD_NS[$pod]}" -br addr
    say "CNI result, what the runtime gets (every interface; only the cluster network's IPs):"
    jq -r '"cniVersion: \(.cniVersion)",
        "interfaces:", (.interfaces[]? | "  " + tojson),
        "ips:", (.ips[]? | "  " + tojson),
        "routes:", (.routes[]? | "  " + tojson),
        (.dns // empty | "dns: " + tojson)' <<<"$result" | indent
    say "network-status (curl --unix-socket $SOCK http://plexus/v1/network-status/<container id>):"
    network_status "$pod" | jq -c '.[]' | indent
}

# ---------------------------------------------------------------------------------------------
section "pod-a: k8s.v1.cni.cncf.io/networks: bridge-net,macvlan-net@data0"
add_pod pod-a

section "pod-b: the JSON form (net1 bridge-net, net2 tuned-net with a MAC, storage-net from net.d)"
add_pod pod-b
step "tuned-net's tuning plugin set the MAC from the annotation and a sysctl"
show ip -n "${POD_NS[pod-b]}" -br link show net2
show ip netns exec "${POD_NS[pod-b]}" sysctl net.core.somaxconn

# ---------------------------------------------------------------------------------------------
section "pod-a pings pod-b over net1 (bridge br-demo in the node namespace)"
B_NET1=$(network_status pod-b | jq -r '.[] | select(.interface == "net1") | .ips[0]')
[[ -n $B_NET1 && $B_NET1 != null ]] || fail "pod-b has no net1 address in its network-status"
show ip netns exec "${POD_NS[pod-a]}" ping -c 2 -W 2 -I net1 "$B_NET1"
ip netns exec "${POD_NS[pod-a]}" ping -q -c 1 -W 2 -I net1 "$B_NET1" >/dev/null || fail "ping over net1 failed"
ok "pod-a reached pod-b ($B_NET1) over net1"

# ---------------------------------------------------------------------------------------------
section "A new NAD and pod, no restart: later/30-late-net.yaml dropped into the manifest dir"
cp "$HERE/later/30-late-net.yaml" "$WORK/manifests/"
sleep 1
say "plexusd's log:"
grep 'manifests loaded' "$WORK/plexusd.log" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g' | indent
add_pod pod-c

# ---------------------------------------------------------------------------------------------
section "DEL every pod, then check that nothing is left"
for pod in "${ADDED[@]}"; do
    cni DEL "$pod" >/dev/null || fail "DEL $pod failed"
    say "DEL $pod: ok"
done
cni DEL pod-a >/dev/null || fail "a second DEL of pod-a failed"
say "DEL pod-a again: ok (DEL is idempotent)"

for pod in "${ADDED[@]}"; do
    links=$(ip -n "${POD_NS[$pod]}" -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
    [[ $links == "lo " ]] || fail "$pod still has: $links"
done
ok "pod namespaces hold only lo"
leases=$(find "$WORK/ipam" -type f ! -name lock ! -name 'last_reserved_ip.*')
[[ -z $leases ]] || fail "host-local allocations left: $leases"
ok "no host-local allocations under $WORK/ipam"
# Everything but the intent journal, which plexusd keeps (README "Records").
records=$(find "$WORK/records" -type f ! -name intents.journal)
[[ -z $records ]] || fail "records left: $records"
ok "no records under $WORK/records"
veths=$(ip -n "$NODE" -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -vx -e ext0 -e ext0-peer || true)
[[ -z $veths ]] || fail "veths left in the node namespace: $veths"
ok "no pod veth left in the node namespace; what remains there (the bridges stay, as with any bridge plugin):"
ip -n "$NODE" -br link | indent

section "Done"
