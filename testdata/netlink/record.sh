#!/usr/bin/env bash
# Records the canned rtnetlink dumps that os-shim/tests/netlink_parse.rs parses.
#
# Usage (root): testdata/netlink/record.sh [SCENARIO...]   (default: all of them)
#
# Each scenario gets a fresh pair of network namespaces made here: A, whose view is recorded,
# and B, holding the far ends of A's veths. Nothing touches the machine's own namespace, and
# both namespaces are deleted on exit. For each scenario, SCENARIO/ gets links.bin, addrs.bin
# and routes.bin (raw kernel answers, written by os-shim/examples/netlink_dump.rs),
# summary.txt (what our parser made of them) and ip.txt (iproute2's independent view).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/debug/examples/netlink_dump

[ "$(id -u)" = 0 ] || { echo "record.sh: must run as root (it creates network namespaces)" >&2; exit 1; }
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET timeout 900 cargo build -q -p os-shim --example netlink_dump)

A=nl-rec-a-$$
B=nl-rec-b-$$
cleanup() {
	ip netns del "$A" 2>/dev/null || true
	ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT

a() { ip -n "$A" "$@"; }
b() { ip -n "$B" "$@"; }

fresh() {
	cleanup
	ip netns add "$A"
	ip netns add "$B"
	a link set lo up
	b link set lo up
}

# veth NAME PEER MAC PEER_MAC: NAME in A, PEER in B, both with fixed MACs (so that the
# EUI-64 link-local addresses are fixed too). Left down: callers set them up.
veth() {
	a link add "$1" address "$3" type veth peer name "$2" address "$4" netns "$B"
}

up() {
	a link set "$1" mtu 1500 up
	b link set "$2" mtu 1500 up
}

# Waits (at most 10 s) for IPv6 duplicate address detection in A, so that flags are settled.
settle() {
	for _ in $(seq 100); do
		[ -z "$(a -6 addr show tentative)" ] && return 0
		sleep 0.1
	done
	echo "record.sh: DAD did not finish in 10 s" >&2
	return 1
}

record() {
	local out=$HERE/$1
	settle
	mkdir -p "$out"
	rm -f "$out"/*.bin
	ip netns exec "$A" timeout 30 "$BIN" "$out" >"$out/summary.txt"
	{
		echo "# ip -d link"; a -d link
		echo "# ip addr"; a addr
		echo "# ip -4 route show table main"; a -4 route show table main
		echo "# ip -6 route show table main"; a -6 route show table main
	} >"$out/ip.txt"
	echo "recorded $1"
}

# One link, veth0 (02:00:00:00:01:02) to B's veth1 (02:00:00:00:01:01).
one_link() {
	veth veth0 veth1 02:00:00:00:01:02 02:00:00:00:01:01
}

# A second link, veth2 (02:00:00:00:02:02) to B's veth3 (02:00:00:00:02:01).
two_links() {
	one_link
	veth veth2 veth3 02:00:00:00:02:02 02:00:00:00:02:01
}

dual_stack_addrs() {
	a addr add 198.51.100.2/24 dev veth0
	a addr add 2001:db8:1::2/64 dev veth0 nodad
	b addr add 198.51.100.1/24 dev veth1
	b addr add 2001:db8:1::1/64 dev veth1 nodad
}

scenario_dual_stack() {
	one_link
	dual_stack_addrs
	up veth0 veth1
	a route add default via 198.51.100.1
	a -6 route add default via 2001:db8:1::1
}

scenario_ipv4_only() {
	one_link
	ip netns exec "$A" sysctl -qw net.ipv6.conf.veth0.disable_ipv6=1
	a addr add 198.51.100.2/24 dev veth0
	b addr add 198.51.100.1/24 dev veth1
	up veth0 veth1
	a route add default via 198.51.100.1
}

scenario_ipv6_only() {
	one_link
	a addr add 2001:db8:1::2/64 dev veth0 nodad
	b addr add 2001:db8:1::1/64 dev veth1 nodad
	up veth0 veth1
	a -6 route add default via 2001:db8:1::1
}

second_link_addrs() {
	a addr add 192.0.2.2/24 dev veth2
	a addr add 2001:db8:2::2/64 dev veth2 nodad
	b addr add 192.0.2.1/24 dev veth3
	b addr add 2001:db8:2::1/64 dev veth3 nodad
}

scenario_two_default_routes() {
	two_links
	dual_stack_addrs
	second_link_addrs
	up veth0 veth1
	up veth2 veth3
	# The worse route first: the kernel sorts by metric, whatever the order of insertion.
	a route add default via 198.51.100.1 dev veth0 metric 100
	a route add default via 192.0.2.1 dev veth2 metric 50
	a -6 route add default via 2001:db8:1::1 dev veth0 metric 100
	a -6 route add default via 2001:db8:2::1 dev veth2 metric 50
}

scenario_no_default_route() {
	one_link
	dual_stack_addrs
	up veth0 veth1
	# Not default routes, but they carry RTA_PREFSRC, RTAX_MTU and a metric.
	a route add 203.0.113.0/24 via 198.51.100.1 dev veth0 src 198.51.100.2 mtu 1400 metric 7
	a -6 route add 2001:db8:99::/48 via 2001:db8:1::1 dev veth0 mtu 1280
}

scenario_ipv6_ll_gateway() {
	one_link
	dual_stack_addrs
	up veth0 veth1
	a route add default via 198.51.100.1
	a -6 route add default via fe80::1 dev veth0
}

scenario_multipath() {
	two_links
	dual_stack_addrs
	second_link_addrs
	up veth0 veth1
	up veth2 veth3
	a route add default nexthop via 198.51.100.1 dev veth0 nexthop via 192.0.2.1 dev veth2
	a -6 route add default nexthop via 2001:db8:1::1 dev veth0 nexthop via 2001:db8:2::1 dev veth2
}

ALL=(dual-stack ipv4-only ipv6-only two-default-routes no-default-route ipv6-ll-gateway multipath)
for s in "${@:-${ALL[@]}}"; do
	fn=scenario_${s//-/_}
	declare -F "$fn" >/dev/null || { echo "record.sh: no scenario $s (have: ${ALL[*]})" >&2; exit 2; }
	fresh
	"$fn"
	record "$s"
done
