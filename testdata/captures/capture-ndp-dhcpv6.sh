#!/bin/sh
# Captures the NDP and DHCPv6 frames a Linux guest sends, for the sans-io tests.
# Runs only inside two network namespaces it creates (ncap-a: the capturing side, standing in
# for passt/pasta; ncap-b: the "guest", its kernel and dhclient), joined by a veth pair, and
# deletes them on exit. Needs root, iproute2, tcpdump, isc-dhcp-client.
#   usage: capture-ndp-dhcpv6.sh OUTDIR
set -eu
OUT=$(realpath "${1:-.}")
TMP=$(mktemp -d)
GUEST_MAC=52:54:00:12:34:56
# dhclient always runs with -sf /bin/true: its default script rewrites /etc/resolv.conf,
# and `ip netns exec` shares the machine's file unless /etc/netns/NAME/resolv.conf exists.

delete_netns() {
	ip netns del ncap-a 2>/dev/null || true
	ip netns del ncap-b 2>/dev/null || true
}
cleanup() {
	delete_netns
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# Fresh namespaces with v0 (capture side) up and v1 (guest side) down.
setup() {
	delete_netns
	ip netns add ncap-a
	ip netns add ncap-b
	# The capturing side stays silent: no IPv6 of its own, so no RS or DAD from v0.
	ip netns exec ncap-a sysctl -qw net.ipv6.conf.default.disable_ipv6=1
	ip -n ncap-a link add v0 type veth peer name v1 netns ncap-b
	ip -n ncap-b link set v1 address "$GUEST_MAC"
	# veth leaves UDP checksums to "hardware"; a tap guest's are complete, so make them so.
	ip netns exec ncap-b ethtool -K v1 tx off >/dev/null
	# Defaults in a new namespace already send RS (forwarding 0, accept_ra 1); say so.
	ip netns exec ncap-b sysctl -qw net.ipv6.conf.v1.accept_ra=1
	ip netns exec ncap-b sysctl -qw net.ipv6.conf.v1.router_solicitations=3
	ip netns exec ncap-b sysctl -qw net.ipv6.conf.v1.addr_gen_mode=0
	ip -n ncap-a link set v0 up
}

# capture FILE SECONDS: tcpdump on v0 in the background; sets $TCPDUMP.
capture() {
	ip netns exec ncap-a timeout "$2" tcpdump -i v0 -U -w "$1" \
		"ether src $GUEST_MAC and (icmp6 or udp port 547)" \
		2>"$TMP/tcpdump.log" &
	TCPDUMP=$!
	sleep 1
}

# 1. Link up: the kernel's DAD probe for its link-local address, then Router Solicitations.
setup
capture "$TMP/linkup.pcap" 8
ip -n ncap-b link set v1 up
wait "$TCPDUMP" || true
# Split by ICMPv6 type (no extension headers on NS/RS, so the type is at ip6[40]).
tcpdump -r "$TMP/linkup.pcap" -w "$OUT/ndp-kernel-rs.pcap" 'icmp6 and ip6[40] == 133'
tcpdump -r "$TMP/linkup.pcap" -w "$OUT/ndp-dad-ns.pcap" 'icmp6 and ip6[40] == 135 and ip6 src ::'

# 2. Address resolution (busybox ping: any packet to an unresolved neighbour does): NS for
# fe80::1 (from the link-local address) and for 2001:db8::1 (from the global one, added
# without DAD so it's usable at once).
setup
ip -n ncap-b link set v1 up
ip -n ncap-b addr add 2001:db8::2/64 dev v1 nodad
sleep 3 # link-local DAD
capture "$TMP/ns.pcap" 6
ip netns exec ncap-b busybox ping -6 -c1 -W1 -I v1 fe80::1 >/dev/null || true
ip netns exec ncap-b busybox ping -6 -c1 -W1 2001:db8::1 >/dev/null || true
wait "$TCPDUMP" || true
tcpdump -r "$TMP/ns.pcap" -w "$OUT/ndp-kernel-ns.pcap" 'icmp6 and ip6[40] == 135 and not ip6 src ::'

# 3. DHCPv6 from dhclient: SOLICIT (default configuration), SOLICIT asking for Rapid Commit
# and a Client FQDN, INFORMATION-REQUEST (-S). Each dhclient is killed by its PID.
dhclient6() {
	file=$1
	shift
	setup
	ip -n ncap-b link set v1 up
	sleep 3 # link-local DAD: dhclient needs a usable link-local source
	capture "$TMP/d.pcap" 7
	ip netns exec ncap-b dhclient -sf /bin/true -6 -d -1 -v -lf "$TMP/d.leases" -pf "$TMP/d.pid" "$@" v1 \
		>"$TMP/dhclient.log" 2>&1 &
	pid=$!
	sleep 3
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	wait "$TCPDUMP" || true
	tcpdump -r "$TMP/d.pcap" -w "$OUT/$file" -c 1 'udp dst port 547'
}
dhclient6 dhcpv6-dhclient-solicit.pcap -cf /dev/null
printf '%s\n' 'send dhcp6.rapid-commit;' 'send fqdn.fqdn "guest.example.org.";' \
	'send fqdn.server-update false;' >"$TMP/rapid.conf"
dhclient6 dhcpv6-dhclient-solicit-rapid.pcap -cf "$TMP/rapid.conf"
dhclient6 dhcpv6-dhclient-inforeq.pcap -S -cf /dev/null
