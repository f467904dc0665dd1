// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// ringway's kernel path for established UDP flows (forward = "kernel" on a UDP
// listener).
//
// ringway opens every flow in userspace, from its first datagram: admission, per-source
// limits, the ring, and the flow's own connected upstream socket. It then puts the
// flow here, as two entries of RINGWAY_UDP_FLOWS:
//
// * client -> the address the client sent to  =>  flow socket -> backend
// * backend -> flow socket                     =>  the address the client sent to -> client
//
// This program runs at tc ingress on every interface (loopback included; its XDP
// variant, ringway_udp_forward_xdp below, on the interfaces udp_kernel_xdp names) and rewrites
// such datagrams in place (addresses, ports, checksums updated incrementally), so the
// backend sees the flow socket, as in userspace, and the client sees the address it
// sent to. Then:
//
// * a destination on this host goes up this host's stack (through loopback when it
//   arrived from elsewhere: its new source is a local address);
// * any other goes out of the interface the route to it takes (bpf_fib_lookup: the
//   next hop's addresses, and the MTU).
//
// Per flow, RINGWAY_UDP_STATE (an array ringway maps into its memory, indexed by the
// flow's slot) counts datagrams and payload bytes each way and when the last one passed, for
// metrics, the access log and the idle timeout. With udp_responses = N, a reply that
// would complete the flow (every datagram has its N replies) is not forwarded here:
// it goes up to the flow socket, and ringway ends the flow as it always does.
//
// Everything else goes up unchanged (TC_ACT_UNSPEC: the next tc program, then the
// stack): fragments, IP options, IPv6 extension headers, GSO packets, a route the
// lookup cannot resolve (no neighbour yet, too big for the MTU). Up there, ringway
// forwards it as in userspace mode: the fast path never changes what happens.
//
// Rebuild the committed object with scripts/build-bpf.sh (CI checks it is identical).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10
#define LOOPBACK_IFINDEX 1

#include "../../bpf_map_def.h"

// The flow as one datagram names it: family (4 or 6), ports and addresses as on the
// wire (an IPv4 address in addr[0]).
struct flow_key {
	__u32 family;
	__u16 sport;
	__u16 dport;
	__u32 saddr[4];
	__u32 daddr[4];
};

// What its datagrams become, the flow's slot in RINGWAY_UDP_STATE, and which way it
// goes (0: from the client, 1: a reply). `csum`: what the rewrite adds to the
// checksums, worked out by ringway when it puts the flow here (the old addresses and
// ports are the key's, so it is the same for every datagram): the low half for the
// addresses (the IPv4 header's checksum and the UDP pseudo-header), the high half for
// the ports; each a folded one's-complement sum, in the byte order the packet's
// checksum fields are read in.
struct flow_value {
	__u32 slot;
	__u32 reply;
	__u16 sport;
	__u16 dport;
	__u32 csum;
	__u32 saddr[4];
	__u32 daddr[4];
};

// One flow's counts (written here, read by ringway through its mapping). ringway sets
// expect, sent and replies when it puts the flow here: its own counts so far.
//
// Before ringway ends a flow (it looks finished with udp_responses, or idle) it pauses
// it: it sets PAUSED in in_packets, then in out_packets, each with one atomic or, and
// the counts stop there, so what it reads next is exact. A datagram is counted with a
// compare-and-swap that fails once PAUSED is set in its direction's word, and goes up
// to ringway then. So every datagram is either in the count ringway read or goes up,
// never both: ringway decides on exact counts, and no datagram is forwarded on a flow
// ringway ends. (A count increment taken back after a separate check of a flag would
// let both sides see the datagram: ringway counted it, kept the flow, and forwarded it
// again when it came up; that flow then waited for one reply too many.)
//
// A reply is judged (does it complete the flow?) against the out_packets it swaps:
// two replies of one flow on two CPUs cannot both pass as not completing when
// together they complete it. The one whose swap fails judges again, and goes up.
struct flow_state {
	__u64 in_packets;
	__u64 in_bytes;
	__u64 out_packets;
	__u64 out_bytes;
	__u64 last_ns;
	__u64 sent;
	__u64 replies;
	__u32 expect;
	__u32 pad;
};

// Set by ringway in in_packets while it decides whether the flow ended: datagrams go up.
#define PAUSED (1ULL << 63)
// How often a datagram from the client tries to count itself against datagrams of the
// same flow on other CPUs before it goes up instead.
#define COUNT_TRIES 4

#define BPF_F_MMAPABLE_ (1U << 10)

struct bpf_map_def SEC("maps") RINGWAY_UDP_FLOWS = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct flow_key),
	.value_size = sizeof(struct flow_value),
	.max_entries = 2,
};

struct bpf_map_def SEC("maps") RINGWAY_UDP_STATE = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct flow_state),
	.max_entries = 1,
	.map_flags = BPF_F_MMAPABLE_,
};

// Whether a reply may be forwarded here when `out` replies were forwarded here before
// it: without udp_responses always; with it, unless it is the one that completes the
// flow (every datagram sent has its replies).
static __always_inline int reply_allowed(struct flow_state *st, __u64 out)
{
	if (!st->expect)
		return 1;
	__u64 sent = st->sent + (*(volatile __u64 *)&st->in_packets & ~PAUSED);
	__u64 got = st->replies + out;
	return got + 1 < sent * st->expect;
}

// The flow of a datagram with key `k`, if it has one: 0, with its entry in *v and its
// counts in *st.
static __always_inline int find(struct flow_key *k, struct flow_value **v, struct flow_state **st)
{
	*v = bpf_map_lookup_elem(&RINGWAY_UDP_FLOWS, k);
	if (!*v)
		return -1;
	__u32 slot = (*v)->slot;
	*st = bpf_map_lookup_elem(&RINGWAY_UDP_STATE, &slot);
	if (!*st)
		return -1;
	return 0;
}

// Counts a datagram forwarded; 0 when it may not be (ringway paused the flow, or the
// reply would complete it, or the count kept changing under it on other CPUs): then
// nothing counts, and the datagram goes up.
static __always_inline int count(struct flow_state *st, int reply, __u32 len)
{
	__u64 *packets = reply ? &st->out_packets : &st->in_packets;
	int counted = 0;
#pragma unroll
	for (int i = 0; i < COUNT_TRIES; i++) {
		__u64 seen = *(volatile __u64 *)packets;
		if (seen & PAUSED)
			return 0;
		if (reply && !reply_allowed(st, seen))
			return 0;
		if (__sync_val_compare_and_swap(packets, seen, seen + 1) == seen) {
			counted = 1;
			break;
		}
	}
	if (!counted)
		return 0;
	__sync_fetch_and_add(reply ? &st->out_bytes : &st->in_bytes, len);
	// The idle timeout's clock: ringway compares it with CLOCK_MONOTONIC, which it
	// trails by at most a tick; the coarse clock is what a timeout in seconds needs.
	st->last_ns = bpf_ktime_get_coarse_ns();
	return 1;
}

// The route of the rewritten datagram, looked up as the stack would forward it from
// the interface it came in on (so that interface must forward: without
// net.ipv4.conf.<it>.forwarding, or IPv6 forwarding, the lookup says so and the flow's
// datagrams go up to ringway). 0 with *local set: to this host; 0: out of fib->ifindex
// to fib->dmac; -1: not resolved (no route or neighbour, too big for the MTU).
static __always_inline int route(void *ctx, struct bpf_fib_lookup *fib, int *local)
{
	int rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) {
		*local = 1;
		return 0;
	}
	*local = 0;
	return rc == BPF_FIB_LKUP_RET_SUCCESS ? 0 : -1;
}

static __always_inline int deliver(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int local)
{
	if (local) {
		if (skb->ifindex == LOOPBACK_IFINDEX)
			return TC_ACT_OK;
		return bpf_redirect(LOOPBACK_IFINDEX, BPF_F_INGRESS);
	}
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_SHOT;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	return bpf_redirect(fib->ifindex, 0);
}

// A datagram of a flow here, and how it is rewritten: the flow's entry and counts, the
// route, the new ports, and the checksum differences the new addresses and ports make.
struct rewrite {
	struct flow_value *v;
	struct flow_state *st;
	struct bpf_fib_lookup fib;
	__u32 addr_diff;
	__u32 port_diff;
	__u32 new_ports;
	int local;
};

// The rewrite of a datagram that arrived on `ifindex` (`ctx`: its skb or XDP frame;
// `xdp`: it is an XDP frame, which a datagram to a loopback address cannot be), once
// counted: 0. -1: it goes up unchanged and uncounted (no flow, no route, paused, the
// reply that completes it).
static __always_inline int plan(void *ctx, __u32 ifindex, int xdp, struct udphdr *uh,
				struct rewrite *r)
{
	if (r->local && xdp)
		return -1;
	r->fib.l4_protocol = IPPROTO_UDP;
	r->fib.sport = r->v->sport;
	r->fib.dport = r->v->dport;
	r->fib.ifindex = ifindex;
	if (!r->local && route(ctx, &r->fib, &r->local))
		return -1;
	__u16 new_p[2] = {r->v->sport, r->v->dport};
	r->new_ports = *(__u32 *)new_p;
	r->addr_diff = r->v->csum & 0xffff;
	r->port_diff = r->v->csum >> 16;
	if (!count(r->st, r->v->reply != 0, bpf_ntohs(uh->len) - sizeof(*uh)))
		return -1;
	return 0;
}

// plan() for IPv4; the new addresses in new_addr (source, destination).
static __always_inline int plan4(void *ctx, __u32 ifindex, int xdp, struct iphdr *ip,
				 struct udphdr *uh, __u32 new_addr[2], struct rewrite *r)
{
	struct flow_key k = {};
	k.family = 4;
	k.sport = uh->source;
	k.dport = uh->dest;
	k.saddr[0] = ip->saddr;
	k.daddr[0] = ip->daddr;
	if (find(&k, &r->v, &r->st))
		return -1;
	r->fib.family = AF_INET;
	r->fib.tot_len = bpf_ntohs(ip->tot_len);
	r->fib.ipv4_src = r->v->saddr[0];
	r->fib.ipv4_dst = r->v->daddr[0];
	// 127.0.0.0/8 is this host's, always: no lookup.
	r->local = (bpf_ntohl(r->v->daddr[0]) >> 24) == 127;
	new_addr[0] = r->v->saddr[0];
	new_addr[1] = r->v->daddr[0];
	return plan(ctx, ifindex, xdp, uh, r);
}

// plan() for IPv6; the new addresses in new_addr (source, destination).
static __always_inline int plan6(void *ctx, __u32 ifindex, int xdp, struct ipv6hdr *ip,
				 struct udphdr *uh, __u32 new_addr[8], struct rewrite *r)
{
	struct flow_key k = {};
	k.family = 6;
	k.sport = uh->source;
	k.dport = uh->dest;
	__builtin_memcpy(k.saddr, &ip->saddr, 16);
	__builtin_memcpy(k.daddr, &ip->daddr, 16);
	if (find(&k, &r->v, &r->st))
		return -1;
	r->fib.family = AF_INET6;
	r->fib.tot_len = bpf_ntohs(ip->payload_len) + sizeof(struct ipv6hdr);
	__builtin_memcpy(r->fib.ipv6_src, r->v->saddr, 16);
	__builtin_memcpy(r->fib.ipv6_dst, r->v->daddr, 16);
	// ::1 is this host's, always: no lookup.
	__u32 *d = r->v->daddr;
	r->local = !d[0] && !d[1] && !d[2] && d[3] == bpf_htonl(1);
	__builtin_memcpy(new_addr, r->v->saddr, 16);
	__builtin_memcpy(new_addr + 4, r->v->daddr, 16);
	return plan(ctx, ifindex, xdp, uh, r);
}

static __always_inline int forward4(struct __sk_buff *skb, struct iphdr *ip, struct udphdr *uh)
{
	struct rewrite r = {};
	__u32 new_addr[2];
	if (plan4(skb, skb->ifindex, 0, ip, uh, new_addr, &r))
		return TC_ACT_UNSPEC;
	const __u32 ip_off = sizeof(struct ethhdr);
	const __u32 udp_off = ip_off + sizeof(struct iphdr);
	const __u32 csum_off = udp_off + offsetof(struct udphdr, check);
	bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, saddr), new_addr, 8, 0);
	bpf_l3_csum_replace(skb, ip_off + offsetof(struct iphdr, check), 0, r.addr_diff, 0);
	bpf_skb_store_bytes(skb, udp_off, &r.new_ports, 4, 0);
	bpf_l4_csum_replace(skb, csum_off, 0, r.addr_diff, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0);
	bpf_l4_csum_replace(skb, csum_off, 0, r.port_diff, BPF_F_MARK_MANGLED_0);
	return deliver(skb, &r.fib, r.local);
}

static __always_inline int forward6(struct __sk_buff *skb, struct ipv6hdr *ip, struct udphdr *uh)
{
	struct rewrite r = {};
	__u32 new_addr[8];
	if (plan6(skb, skb->ifindex, 0, ip, uh, new_addr, &r))
		return TC_ACT_UNSPEC;
	const __u32 ip_off = sizeof(struct ethhdr);
	const __u32 udp_off = ip_off + sizeof(struct ipv6hdr);
	const __u32 csum_off = udp_off + offsetof(struct udphdr, check);
	bpf_skb_store_bytes(skb, ip_off + offsetof(struct ipv6hdr, saddr), new_addr, 32, 0);
	bpf_skb_store_bytes(skb, udp_off, &r.new_ports, 4, 0);
	bpf_l4_csum_replace(skb, csum_off, 0, r.addr_diff, BPF_F_PSEUDO_HDR);
	bpf_l4_csum_replace(skb, csum_off, 0, r.port_diff, 0);
	return deliver(skb, &r.fib, r.local);
}

SEC("classifier")
int ringway_udp_forward(struct __sk_buff *skb)
{
	// GSO packets (several datagrams in one, e.g. UDP_SEGMENT) go up.
	if (skb->gso_segs > 1)
		return TC_ACT_UNSPEC;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return TC_ACT_UNSPEC;
		struct udphdr *uh = (void *)(ip + 1);
		if ((void *)(uh + 1) > end)
			return TC_ACT_UNSPEC;
		return forward4(skb, ip, uh);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->nexthdr != IPPROTO_UDP)
			return TC_ACT_UNSPEC;
		struct udphdr *uh = (void *)(ip + 1);
		if ((void *)(uh + 1) > end)
			return TC_ACT_UNSPEC;
		return forward6(skb, ip, uh);
	}
	return TC_ACT_UNSPEC;
}

// The same forwarding at XDP, for interfaces with native XDP (a NIC's driver, veth):
// the datagram is rewritten before the kernel builds its socket buffer. The checksums
// are updated incrementally from what the frame carries, so they must be whole: a
// frame from a local socket with its checksum left to the hardware (veth with tx
// checksumming on) would leave with a wrong one. A destination on this host goes up
// rewritten (XDP_PASS) unless it is a loopback address, which cannot arrive here:
// that datagram goes up unchanged.

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

// The checksum `check` becomes once `diff` (a flow's csum half, or their sum) is applied.
static __always_inline __u16 csum_apply(__u16 check, __u64 diff)
{
	return csum_fold((__u64)(__u16)~check + diff);
}

static __always_inline int xdp_deliver(struct xdp_md *ctx, struct ethhdr *eth,
				       struct bpf_fib_lookup *fib, int local)
{
	if (local)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib->ifindex, 0);
}

static __always_inline int xdp_forward4(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *ip,
					struct udphdr *uh)
{
	struct rewrite r = {};
	__u32 new_addr[2];
	if (plan4(ctx, ctx->ingress_ifindex, 1, ip, uh, new_addr, &r))
		return XDP_PASS;
	ip->saddr = new_addr[0];
	ip->daddr = new_addr[1];
	ip->check = csum_apply(ip->check, r.addr_diff);
	*(__u32 *)&uh->source = r.new_ports;
	// 0: sent without a checksum (IPv4 allows it), and so it stays.
	if (uh->check) {
		__u16 c = csum_apply(uh->check, (__u64)r.addr_diff + r.port_diff);
		uh->check = c ? c : 0xffff;
	}
	return xdp_deliver(ctx, eth, &r.fib, r.local);
}

static __always_inline int xdp_forward6(struct xdp_md *ctx, struct ethhdr *eth, struct ipv6hdr *ip,
					struct udphdr *uh)
{
	struct rewrite r = {};
	__u32 new_addr[8];
	if (plan6(ctx, ctx->ingress_ifindex, 1, ip, uh, new_addr, &r))
		return XDP_PASS;
	__builtin_memcpy(&ip->saddr, new_addr, 32);
	*(__u32 *)&uh->source = r.new_ports;
	__u16 c = csum_apply(uh->check, (__u64)r.addr_diff + r.port_diff);
	uh->check = c ? c : 0xffff;
	return xdp_deliver(ctx, eth, &r.fib, r.local);
}

SEC("xdp")
int ringway_udp_forward_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return XDP_PASS;
		struct udphdr *uh = (void *)(ip + 1);
		if ((void *)(uh + 1) > end)
			return XDP_PASS;
		return xdp_forward4(ctx, eth, ip, uh);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->nexthdr != IPPROTO_UDP)
			return XDP_PASS;
		struct udphdr *uh = (void *)(ip + 1);
		if ((void *)(uh + 1) > end)
			return XDP_PASS;
		return xdp_forward6(ctx, eth, ip, uh);
	}
	return XDP_PASS;
}

// bpf_fib_lookup is for GPL-compatible programs only: this one is dual-licensed.
char LICENSE[] SEC("license") = "Dual BSD/GPL";
