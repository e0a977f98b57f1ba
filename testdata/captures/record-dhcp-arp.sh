#!/bin/sh
# Records the DHCP and ARP captures described in README.md ("DHCP and ARP"), between two
# network namespaces joined by a veth pair: nothing touches the host's own network.
# Needs root, iproute2, tcpdump, busybox (udhcpc, arping, ping) and isc-dhcp-client.
# Usage: sh record-dhcp-arp.sh [OUTDIR]   (default: the directory of this script)
set -eu
# dhclient always runs with -sf /bin/true: its default script rewrites /etc/resolv.conf,
# and `ip netns exec` shares the machine's file unless /etc/netns/NAME/resolv.conf exists.

out=${1:-$(dirname "$0")}
guest_mac=52:54:00:12:34:56

cleanup() {
	[ -n "${dhc_pid:-}" ] && kill "$dhc_pid" 2>/dev/null || true
	ip netns del dcap-a 2>/dev/null || true
	ip netns del dcap-b 2>/dev/null || true
	rm -f /tmp/dcap.leases /tmp/dcap.pid
}
trap cleanup EXIT INT TERM

ip netns add dcap-a
ip netns add dcap-b
ip -n dcap-a link add v0 type veth peer name v1 netns dcap-b
# A fixed, qemu-style guest MAC so the captures are reproducible.
ip -n dcap-b link set v1 address "$guest_mac"
ip -n dcap-a link set v0 up
ip -n dcap-b link set v1 up
sleep 1

# $1: file, $2: packet count, $3: filter; the capture runs in dcap-a, in the background.
capture() {
	ip netns exec dcap-a timeout 10 tcpdump -U -n -i v0 -w "$out/$1" -c "$2" "$3" &
	cap_pid=$!
	sleep 1
}
wait_capture() { wait "$cap_pid" || true; }

# 1. busybox udhcpc: its first DISCOVER.
capture dhcp-udhcpc-discover.pcap 1 'udp port 67'
ip netns exec dcap-b timeout 8 busybox udhcpc -i v1 -n -q -t 2 -T 1 >/dev/null 2>&1 || true
wait_capture

# 2. ISC dhclient: its first DISCOVER.
capture dhcp-dhclient-discover.pcap 1 'udp port 67'
ip netns exec dcap-b timeout 8 dhclient -sf /bin/true -4 -d -1 -v -lf /tmp/dcap.leases -pf /tmp/dcap.pid v1 \
	>/dev/null 2>&1 &
dhc_pid=$!
wait_capture
kill "$dhc_pid" 2>/dev/null || true
wait "$dhc_pid" 2>/dev/null || true
dhc_pid=

# 3. ISC dhclient in INIT-REBOOT: given an unexpired lease, it asks to keep it with a REQUEST
#    (option 50 = the leased address, no server identifier: RFC 2131 section 4.3.2).
cat >/tmp/dcap.leases <<EOF
lease {
  interface "v1";
  fixed-address 192.0.2.2;
  option subnet-mask 255.255.255.0;
  option routers 192.0.2.1;
  option dhcp-server-identifier 192.0.2.1;
  option dhcp-lease-time 86400;
  renew 4 2037/12/31 00:00:00;
  rebind 4 2037/12/31 00:00:00;
  expire 4 2037/12/31 00:00:00;
}
EOF
capture dhcp-dhclient-request.pcap 1 'udp port 67'
ip netns exec dcap-b timeout 8 dhclient -sf /bin/true -4 -d -1 -v -lf /tmp/dcap.leases -pf /tmp/dcap.pid v1 \
	>/dev/null 2>&1 &
dhc_pid=$!
wait_capture
kill "$dhc_pid" 2>/dev/null || true
wait "$dhc_pid" 2>/dev/null || true
dhc_pid=
ip -n dcap-b addr flush dev v1
ip -n dcap-b link set v1 up

# 4. busybox arping -D: a duplicate address detection probe (sender 0.0.0.0, RFC 5227).
capture arp-probe.pcap 1 'arp'
ip netns exec dcap-b timeout 5 busybox arping -D -c 1 -w 1 -I v1 192.0.2.2 >/dev/null 2>&1 || true
wait_capture

# 5. The kernel's own ARP request, as a guest resolving its gateway sends it.
ip -n dcap-b addr add 192.0.2.2/24 dev v1
capture arp-request.pcap 1 'arp'
ip netns exec dcap-b timeout 5 busybox ping -c 1 -W 1 192.0.2.1 >/dev/null 2>&1 || true
wait_capture

# 6. busybox arping -U: a gratuitous announcement (sender IP == target IP).
capture arp-announce.pcap 1 'arp'
ip netns exec dcap-b timeout 5 busybox arping -U -c 1 -w 1 -I v1 192.0.2.2 >/dev/null 2>&1 || true
wait_capture

ls -l "$out"/dhcp-*.pcap "$out"/arp-*.pcap
