// The XDP half of wavry-net's AF_XDP backend: UDP datagrams to one port on the forwarder's
// own addresses go to the AF_XDP socket of the receive queue they arrived on; everything else
// (ARP, ICMP, neighbour discovery, other ports and addresses, IP fragments) goes on to the
// kernel as if no program were attached. Built from source by engine/net/build.rs with clang
// (Debian: clang, libbpf-dev); loaded and configured through its maps by src/xdp/program.rs.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// One AF_XDP socket per receive queue, keyed by queue index.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// [0]: the UDP port, host byte order (0: redirect nothing).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} config SEC(".maps");

// The forwarder's IPv4 addresses (network byte order); value unused.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} addrs4 SEC(".maps");

// The forwarder's IPv6 addresses; value unused.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct in6_addr);
	__type(value, __u8);
} addrs6 SEC(".maps");

// Per-CPU counters: [0] redirected to a socket, [1] passed to the kernel,
// [2] matched but no socket on the queue (passed to the kernel).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

static __always_inline int count(__u32 which, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &which);
	if (n)
		*n += 1;
	return verdict;
}

SEC("xdp")
int udp_to_xsk(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return count(1, XDP_PASS);
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > end)
			return count(1, XDP_PASS);
		proto = vlan->proto;
		l3 = vlan + 1;
	}
	// The destination port is read as soon as its bytes are proven in bounds: a pointer
	// kept across the map lookups below loses its bounds in the verifier's eyes.
	__be16 dport;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return count(1, XDP_PASS);
		// Fragments (MF or an offset) are reassembled by the kernel's socket path.
		if (ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)))
			return count(1, XDP_PASS);
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return count(1, XDP_PASS);
		struct udphdr *udp = l3 + ihl;
		if ((void *)(udp + 1) > end)
			return count(1, XDP_PASS);
		dport = udp->dest;
		__u32 daddr = ip->daddr;
		if (!bpf_map_lookup_elem(&addrs4, &daddr))
			return count(1, XDP_PASS);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return count(1, XDP_PASS);
		if (ip6->nexthdr != IPPROTO_UDP)
			return count(1, XDP_PASS);
		struct udphdr *udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end)
			return count(1, XDP_PASS);
		dport = udp->dest;
		struct in6_addr daddr = ip6->daddr;
		if (!bpf_map_lookup_elem(&addrs6, &daddr))
			return count(1, XDP_PASS);
	} else {
		return count(1, XDP_PASS);
	}
	__u32 zero = 0;
	__u32 *port = bpf_map_lookup_elem(&config, &zero);
	if (!port || *port == 0 || dport != bpf_htons((__u16)*port))
		return count(1, XDP_PASS);
	// XDP_PASS as the flags' low bits: with no socket on this queue the kernel takes it.
	int verdict = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	return count(verdict == XDP_REDIRECT ? 0 : 2, verdict);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
