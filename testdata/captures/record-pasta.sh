#!/bin/sh
# Records whole pasta sessions with `pasta --pcap` (see README.md, "Sessions through pasta"):
# DHCP and NDP, a TCP download, UDP exchanges, pings. Runs in a lab of two network namespaces
# made here, "host" (where pasta runs) and "remote" (the servers), joined by a veth pair, with
# the addresses of bins/tests/common (198.51.100.2/24 and 2001:db8:1::2/64 on the host, its
# gateways .1 and ::1 on the remote, servers on 203.0.113.10 and 2001:db8:2::10). Nothing
# touches the machine's own namespace; the host namespace has its own resolv.conf.
# Needs root, iproute2, socat, python3, curl, busybox (udhcpc), iputils ping.
# Usage: sh record-pasta.sh PASTA [PREFIX] [OUTDIR]
#   PASTA:  the pasta to run (ours: target/debug/pasta; the original: /usr/bin/pasta)
#   PREFIX: file name prefix (default "pasta"), OUTDIR: default the directory of this script
# SESSIONS="tcp-inbound udp ..." records only those sessions (default: all).
set -eu

pasta=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")  # not realpath: pasta may be a link to passt
prefix=${2:-pasta}
out=$(realpath "${3:-$(dirname "$0")}")
h=pcap-host-$$
r=pcap-remote-$$
tmp=$(mktemp -d)

cleanup() {
	[ -n "${srv_pids:-}" ] && kill $srv_pids 2>/dev/null || true
	ip netns del "$h" 2>/dev/null || true
	ip netns del "$r" 2>/dev/null || true
	rm -rf "/etc/netns/$h" "$tmp"
}
trap cleanup EXIT INT TERM

ip netns add "$h"
ip netns add "$r"
ip -n "$h" link add veth0 type veth peer name veth0 netns "$r"
ip -n "$h" link set veth0 address 02:00:00:00:01:02
ip -n "$r" link set veth0 address 02:00:00:00:01:01
for ns in "$h" "$r"; do
	ip -n "$ns" link set lo up
	ip -n "$ns" link set veth0 up
done
ip -n "$h" addr add 198.51.100.2/24 dev veth0
ip -n "$r" addr add 198.51.100.1/24 dev veth0
ip -n "$h" route add default via 198.51.100.1
ip -n "$h" addr add 2001:db8:1::2/64 dev veth0 nodad
ip -n "$r" addr add 2001:db8:1::1/64 dev veth0 nodad
ip -n "$h" -6 route add default via 2001:db8:1::1
ip -n "$r" addr add 203.0.113.10/32 dev lo
ip -n "$r" addr add 2001:db8:2::10/128 dev lo
mkdir -p "/etc/netns/$h"
# pasta reads the host's addresses when it starts: wait (bounded) until duplicate address
# detection is over, or the link-local address it answers from would still be tentative.
i=0
while [ -n "$(ip -n "$h" -6 addr show tentative)" ] && [ $i -lt 50 ]; do
	sleep 0.1
	i=$((i + 1))
done
# pasta's ICMP echo sockets need the group in the host namespace's ping range.
ip netns exec "$h" sysctl -qw net.ipv4.ping_group_range="0 2147483647"
printf 'nameserver 203.0.113.53\nnameserver 2001:db8:2::53\nsearch lab.test\n' \
	>"/etc/netns/$h/resolv.conf"

# Servers on the remote: 100 000 bytes of a fixed pattern over TCP, a UDP echo.
i=0
while [ $i -lt 2500 ]; do
	printf 'passt-rs capture line %05d ...........\n' $i
	i=$((i + 1))
done >"$tmp/blob"
cat >"$tmp/serve.py" <<'PY'
# Reads a request up to its blank line, answers with the blob, then waits for the client's end.
import socket, sys
blob = open(sys.argv[1], "rb").read()
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 8000))
s.listen()
s.settimeout(60)
while True:
    c, _ = s.accept()
    c.settimeout(10)
    req = b""
    while b"\r\n\r\n" not in req:
        got = c.recv(4096)
        if not got:
            break
        req += got
    c.sendall(blob)
    c.shutdown(socket.SHUT_WR)
    while c.recv(4096):
        pass
    c.close()
PY
ip netns exec "$r" timeout 60 python3 "$tmp/serve.py" "$tmp/blob" &
srv_pids="$!"
cat >"$tmp/echo.py" <<'PY'
# Echoes UDP datagrams back to their sender, from the address they were sent to.
import select, socket
socks = []
for family, addr in ((socket.AF_INET, "203.0.113.10"), (socket.AF_INET6, "2001:db8:2::10")):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr, 9000))
    socks.append(s)
while True:
    ready, _, _ = select.select(socks, [], [], 60)
    if not ready:
        break
    for s in ready:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)
PY
ip netns exec "$r" timeout 60 python3 "$tmp/echo.py" &
srv_pids="$srv_pids $!"
sleep 1

# $1: capture name, then pasta's options and the command.
session() {
	name=$1
	shift
	case " ${SESSIONS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
	timeout 30 ip netns exec "$h" "$pasta" ${PASTA_OPTS:-} --pcap "$out/$prefix-$name.pcap" "$@" \
		>"$tmp/$name.log" 2>&1 || { echo "$name failed:"; cat "$tmp/$name.log"; exit 1; }
	echo "$out/$prefix-$name.pcap"
}

# 1. DHCP, NDP and DHCPv6: the namespace's kernel (router and neighbour solicitations),
# udhcpc and dhclient -6 (stateless, an Information-request) configure the link from our
# answers. dhclient runs with -sf /bin/true: it must not rewrite any resolv.conf.
session dhcp-ndp -- sh -c 'ip link set lo up;
	dev=$(ls /sys/class/net | grep -v lo | head -1);
	ip link set "$dev" up;
	busybox udhcpc -i "$dev" -n -q -t 3 -T 1 -s /bin/true >/dev/null 2>&1; sleep 2;
	timeout 3 dhclient -sf /bin/true -6 -S -1 -d -lf '"$tmp"'/l6 -pf '"$tmp"'/p6 "$dev" >/dev/null 2>&1;
	sleep 1'

# 2. A TCP download of 100 000 bytes (IPv4).
session tcp-bulk --config-net -- sh -c \
	'curl -sS --http0.9 --max-time 10 -o /dev/null http://203.0.113.10:8000/'

# 3. UDP: three datagrams echoed, IPv4 and IPv6.
session udp --config-net -- sh -c \
	'for a in 203.0.113.10 "[2001:db8:2::10]"; do
		for n in 1 2 3; do echo "datagram $n" | socat -T 1 - "UDP:$a:9000"; done
	done'

# 4. Pings, IPv4 and IPv6.
session ping --config-net -- sh -c \
	'ping -c 3 -i 0.2 -W 2 203.0.113.10 >/dev/null; ping -6 -c 3 -i 0.2 -W 2 2001:db8:2::10 >/dev/null'

# 5. A connection into the namespace through a forwarded port (-t 8080): a client on the
# remote sends a line to the host's address, a server in the namespace answers with 20 000
# bytes of the blob and closes.
cat >"$tmp/inbound.py" <<'PY'
import socket, sys
blob = open(sys.argv[1], "rb").read()[:20000]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen()
s.settimeout(10)
c, _ = s.accept()
c.settimeout(10)
c.recv(4096)
c.sendall(blob)
c.shutdown(socket.SHUT_WR)
while c.recv(4096):
    pass
c.close()
PY
case " ${SESSIONS:-tcp-inbound} " in *" tcp-inbound "*)
	(sleep 2; ip netns exec "$r" sh -c 'echo hello | timeout 10 socat -t 3 - TCP:198.51.100.2:8080 >/dev/null') &
	client=$!
	session tcp-inbound --config-net -t 8080 -- sh -c "timeout 15 python3 $tmp/inbound.py $tmp/blob"
	wait "$client" || true
	;;
esac
