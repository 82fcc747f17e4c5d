// A socket filter for forwarders (SO_ATTACH_BPF on UDP sockets): the kernel drops a datagram
// before it is queued or copied out when
//   - its payload is shorter than the configured minimum or does not start with the two
//     configured bytes (what the classic-BPF prefix filter of src/filter.rs does), or
//   - its payload byte `guard_offset` equals `guard_value` (a forwarder's data packets) and
//     the pair (16-byte id at `id_offset`, source address and port) is not in `peers`: data
//     from an address the forwarder has not bound to that session.
// Everything else (the forwarder's control packets, which user space verifies) is kept.
// The forwarder keeps `peers` in step with its bindings. With UDP GRO a coalesced batch is
// judged by its first datagram; the forwarder still checks every one.
// Built from source by engine/net/build.rs; loaded by src/bound_peers.rs.

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Bytes of the UDP header in front of the payload where a socket filter runs.
#define UDP_HEADER 8

struct config {
	__u8 prefix[2];
	__u8 guard_offset;
	__u8 guard_value;
	__u32 min_len;
	__u32 id_offset;
};

struct peer_key {
	__u8 id[16];
	// IPv6, or IPv4 mapped into IPv6 (::ffff:a.b.c.d).
	__u8 addr[16];
	// Network byte order, as on the wire.
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

// Bound (id, address) pairs; the loader sets max_entries. No preallocation: the kernel
// allocates an entry when it is inserted, so a large table costs only what is bound.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer_key);
	__type(value, __u8);
} peers SEC(".maps");

SEC("socket")
int bound_peers(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return 0;
	__u32 len = skb->len;
	if (len < UDP_HEADER + cfg->min_len || len < UDP_HEADER + 2)
		return 0;
	__u8 head[2];
	if (bpf_skb_load_bytes(skb, UDP_HEADER, head, 2) < 0)
		return 0;
	if (head[0] != cfg->prefix[0] || head[1] != cfg->prefix[1])
		return 0;
	__u8 kind;
	if (bpf_skb_load_bytes(skb, UDP_HEADER + (cfg->guard_offset & 0xff), &kind, 1) < 0)
		return 0;
	if (kind != cfg->guard_value)
		return len;

	struct peer_key key = {};
	if (bpf_skb_load_bytes(skb, UDP_HEADER + (cfg->id_offset & 0xffff), key.id, 16) < 0)
		return 0;
	// The UDP header's source port (offset 0).
	if (bpf_skb_load_bytes(skb, 0, &key.port, 2) < 0)
		return 0;
	__u8 version;
	if (bpf_skb_load_bytes_relative(skb, 0, &version, 1, BPF_HDR_START_NET) < 0)
		return 0;
	switch (version >> 4) {
	case 4:
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		if (bpf_skb_load_bytes_relative(skb, 12, &key.addr[12], 4, BPF_HDR_START_NET) < 0)
			return 0;
		break;
	case 6:
		if (bpf_skb_load_bytes_relative(skb, 8, key.addr, 16, BPF_HDR_START_NET) < 0)
			return 0;
		break;
	default:
		return 0;
	}
	if (!bpf_map_lookup_elem(&peers, &key))
		return 0;
	return len;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
