// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// ringway's second chance between the nodes of a fleet ([cluster] peers).
//
// Behind ECMP, a router that moves a connection to another node (a node withdrew its
// route, the multipath hash changed) sends its packets to a kernel that has never seen
// it, which answers with a reset. This program runs at tc ingress on the node's
// interfaces and takes such packets before the stack does:
//
// * A TCP segment for one of ringway's listener addresses that is not a SYN and that
//   no local socket holds (no socket, or only the listener, and not a valid SYN cookie)
//   is encapsulated in IPIP (outer source: this node; outer destination: the next
//   peer) and sent on. The outer IP id carries the chain: the index of the node that
//   first missed it (high byte) and the hops so far (low byte).
// * An IPIP packet from a peer, to this node: if a local socket holds its inner
//   segment, it is decapsulated and goes up the stack as if it had arrived here (the
//   owner answers the client directly, from the address it still holds); otherwise it
//   goes on to the next peer, skipping the node it started from, until every other
//   node has seen it (count - 1 hops); the last gives it to its own stack, which resets
//   the connection as it would have without second chance (its owner is gone).
//
// * A UDP datagram of a flow a leaving peer holds (that peer told this node so: the
//   flows are in RINGWAY_CL_UDP, put there by ringway) goes in IPIP to that peer, which
//   decapsulates it: the flow keeps its upstream socket, so its backend keeps seeing
//   the same source address and port.
//
// A SYN is never forwarded (new connections stay where ECMP puts them), nor is
// anything else (other UDP, fragments, IP options, IPv6): those return TC_ACT_UNSPEC
// and the kernel, or the next tc program, handles them as usual.
//
// Rebuild the committed object with scripts/build-bpf.sh (CI checks it is identical).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Linux 6.3's flag (Debian 12's headers are 6.1's).
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif

#define MAX_PEERS 16
#define AF_INET 2

// Counter slots (RINGWAY_CL_STATS: packets at 2 x slot, bytes at 2 x slot + 1).
// 0 .. MAX_PEERS - 1: sent on to that peer.
#define DELIVERED (MAX_PEERS)     // from a peer, held here: delivered
#define DROPPED (MAX_PEERS + 1)   // from a peer, held by no node: reset here
#define NO_ROUTE (MAX_PEERS + 2)  // no route or neighbour to the next peer
#define TOO_BIG (MAX_PEERS + 3)   // over the path MTU once encapsulated
#define SLOTS (MAX_PEERS + 4)

// Legacy map definitions (no BTF: the same bytes wherever it is built).
#include "../bpf_map_def.h"

// ringway's TCP listener addresses: key (address << 16) | port, both as on the wire
// (a wildcard listener has address 0).
struct bpf_map_def SEC("maps") RINGWAY_CL_LISTEN = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u64),
	.value_size = sizeof(__u32),
	.max_entries = 1024,
};

// The peers' addresses (as on the wire), in [cluster] peers order.
struct bpf_map_def SEC("maps") RINGWAY_CL_PEERS = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = MAX_PEERS,
};

// 0: this node's index in the peers, 1: how many peers; 0 peers: off.
struct bpf_map_def SEC("maps") RINGWAY_CL_SELF = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 2,
};

// UDP flows leaving peers hold: key {client address, listener address, client port |
// listener port << 16} (as on the wire) -> the peer's index.
struct bpf_map_def SEC("maps") RINGWAY_CL_UDP = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 3 * sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 65536,
};

struct bpf_map_def SEC("maps") RINGWAY_CL_STATS = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 2 * SLOTS,
};

static __always_inline void count(__u32 slot, __u32 bytes)
{
	__u32 k = 2 * slot;
	__u64 *v = bpf_map_lookup_elem(&RINGWAY_CL_STATS, &k);
	if (v)
		*v += 1;
	k += 1;
	v = bpf_map_lookup_elem(&RINGWAY_CL_STATS, &k);
	if (v)
		*v += bytes;
}

static __always_inline __u32 get(void *map, __u32 k)
{
	__u32 *v = bpf_map_lookup_elem(map, &k);
	return v ? *v : 0;
}

static __always_inline int listener(__u32 addr, __u16 port)
{
	__u64 k = ((__u64)addr << 16) | port;
	if (bpf_map_lookup_elem(&RINGWAY_CL_LISTEN, &k))
		return 1;
	k = port;
	return bpf_map_lookup_elem(&RINGWAY_CL_LISTEN, &k) != 0;
}

// Whether a local socket holds this segment's connection: an established (or closing,
// or handshaking) socket, or a listener whose SYN cookie the segment carries.
static __always_inline int held_here(struct __sk_buff *skb, struct iphdr *ip, struct tcphdr *th)
{
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = th->source;
	t.ipv4.dport = th->dest;
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	int held = sk->state != BPF_TCP_LISTEN;
	if (!held)
		held = bpf_tcp_check_syncookie(sk, ip, sizeof(*ip), th, sizeof(*th)) == 0;
	bpf_sk_release(sk);
	return held;
}

// The next node of a chain that started at `origin`, after `cur`.
static __always_inline __u32 next_peer(__u32 cur, __u32 origin, __u32 n)
{
	__u32 next = cur + 1 >= n ? 0 : cur + 1;
	if (next == origin)
		next = next + 1 >= n ? 0 : next + 1;
	return next;
}

static __always_inline __u16 ip_checksum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

// Sends the IPIP packet in `skb` (outer header already written for `peer`) out of the
// interface the route to the peer takes, with that hop's addresses.
static __always_inline int send(struct __sk_buff *skb, __u32 slot, struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_SHOT;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	count(slot, skb->len);
	return bpf_redirect(fib->ifindex, 0);
}

// The route to `dst` for this packet grown by `grow` bytes: 0 when there is one (in
// `fib`) and the packet fits its MTU, else the counter slot that says why not. A GSO
// packet (segments the stack took together) fits when each of its segments does: the
// encapsulation shrinks its segment size by `grow`, so its segments still fit after.
static __always_inline int route_to(struct __sk_buff *skb, __u32 src, __u32 dst, __s32 grow,
				    struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->ipv4_src = src;
	fib->ipv4_dst = dst;
	fib->ifindex = skb->ifindex;
	int rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return TOO_BIG;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return NO_ROUTE;
	// (The lookup checks the packet as it is, not as it will be once encapsulated.)
	__u32 mtu = 0;
	long rc_mtu = skb->gso_size ? bpf_check_mtu(skb, fib->ifindex, &mtu, 0, BPF_MTU_CHK_SEGS)
				    : bpf_check_mtu(skb, fib->ifindex, &mtu, grow, 0);
	return rc_mtu ? TOO_BIG : 0;
}

static __always_inline void outer(struct iphdr *o, __u16 len, __u32 src, __u32 dst, __u32 origin,
				  __u32 hops)
{
	o->version = 4;
	o->ihl = 5;
	o->tos = 0;
	o->tot_len = bpf_htons(len);
	o->id = bpf_htons((__u16)((origin << 8) | hops));
	o->frag_off = 0;
	o->ttl = 64;
	o->protocol = IPPROTO_IPIP;
	o->saddr = src;
	o->daddr = dst;
	o->check = 0;
	o->check = ip_checksum(o);
}

// A packet this node does not hold: encapsulated, to peer `next` (the first node of
// the chain, or the leaving peer that holds its UDP flow).
static __always_inline int first_chance(struct __sk_buff *skb, __u32 me, __u32 next,
					__u16 inner_len)
{
	__u32 src = get(&RINGWAY_CL_PEERS, me);
	__u32 dst = get(&RINGWAY_CL_PEERS, next);
	__u16 len = inner_len + sizeof(struct iphdr);
	struct bpf_fib_lookup fib;
	int why = route_to(skb, src, dst, sizeof(struct iphdr), &fib);
	if (why) {
		count(why, skb->len);
		return TC_ACT_UNSPEC;
	}
	if (bpf_skb_adjust_room(skb, sizeof(struct iphdr), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
		return TC_ACT_UNSPEC;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *o = data + sizeof(struct ethhdr);
	if ((void *)(o + 1) > end)
		return TC_ACT_SHOT;
	outer(o, len, src, dst, me, 1);
	return send(skb, next, &fib);
}

// An IPIP packet from a peer: delivered here, sent on, or (end of the chain) dropped.
static __always_inline int from_peer(struct __sk_buff *skb, struct iphdr *o, __u32 me, __u32 n)
{
	void *end = (void *)(long)skb->data_end;
	__u32 self = get(&RINGWAY_CL_PEERS, me);
	if (o->daddr != self || (o->frag_off & bpf_htons(0x3fff)))
		return TC_ACT_UNSPEC;
	int known = 0;
#pragma unroll
	for (__u32 i = 0; i < MAX_PEERS; i++)
		if (i < n && i != me && get(&RINGWAY_CL_PEERS, i) == o->saddr)
			known = 1;
	if (!known)
		return TC_ACT_UNSPEC;
	struct iphdr *ip = (void *)(o + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5)
		return TC_ACT_UNSPEC;
	if (ip->protocol == IPPROTO_UDP) {
		// A datagram of a flow this node told its peers it holds.
		count(DELIVERED, skb->len);
		if (bpf_skb_adjust_room(skb, -(int)sizeof(struct iphdr), BPF_ADJ_ROOM_MAC,
					BPF_F_ADJ_ROOM_DECAP_L3_IPV4))
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}
	if (ip->protocol != IPPROTO_TCP)
		return TC_ACT_UNSPEC;
	struct tcphdr *th = (void *)(ip + 1);
	if ((void *)(th + 1) > end)
		return TC_ACT_UNSPEC;
	__u16 id = bpf_ntohs(o->id);
	__u32 origin = id >> 8, hops = id & 0xff;
	__u16 len = bpf_ntohs(o->tot_len);
	if (origin >= n)
		return TC_ACT_SHOT;
	int held = held_here(skb, ip, th);
	if (held || hops + 1 >= n) {
		// Held here: delivered. Held by no node (the end of the chain: its node died,
		// or it ended): delivered too, so that this stack answers with the reset the
		// client would have had without second chance, rather than leave it hanging.
		count(held ? DELIVERED : DROPPED, skb->len);
		if (bpf_skb_adjust_room(skb, -(int)sizeof(struct iphdr), BPF_ADJ_ROOM_MAC,
					BPF_F_ADJ_ROOM_DECAP_L3_IPV4))
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}
	__u32 next = next_peer(me, origin, n);
	__u32 dst = get(&RINGWAY_CL_PEERS, next);
	struct bpf_fib_lookup fib;
	int why = route_to(skb, self, dst, 0, &fib);
	if (why) {
		count(why, skb->len);
		return TC_ACT_SHOT;
	}
	void *data = (void *)(long)skb->data;
	o = data + sizeof(struct ethhdr);
	if ((void *)(o + 1) > (void *)(long)skb->data_end)
		return TC_ACT_SHOT;
	outer(o, len, self, dst, origin, hops + 1);
	return send(skb, next, &fib);
}

SEC("classifier")
int ringway_second_chance(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5)
		return TC_ACT_UNSPEC;
	__u32 n = get(&RINGWAY_CL_SELF, 1);
	__u32 me = get(&RINGWAY_CL_SELF, 0);
	if (n < 2 || n > MAX_PEERS || me >= n)
		return TC_ACT_UNSPEC;
	if (ip->protocol == IPPROTO_IPIP)
		return from_peer(skb, ip, me, n);
	if (ip->frag_off & bpf_htons(0x3fff))
		return TC_ACT_UNSPEC;
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = (void *)(ip + 1);
		if ((void *)(uh + 1) > end)
			return TC_ACT_UNSPEC;
		__u32 key[3] = {ip->saddr, ip->daddr, (__u32)uh->source | ((__u32)uh->dest << 16)};
		__u32 *peer = bpf_map_lookup_elem(&RINGWAY_CL_UDP, key);
		if (!peer || *peer >= n || *peer == me)
			return TC_ACT_UNSPEC;
		return first_chance(skb, me, *peer, bpf_ntohs(ip->tot_len));
	}
	if (ip->protocol != IPPROTO_TCP)
		return TC_ACT_UNSPEC;
	struct tcphdr *th = (void *)(ip + 1);
	if ((void *)(th + 1) > end || th->syn)
		return TC_ACT_UNSPEC;
	if (!listener(ip->daddr, th->dest) || held_here(skb, ip, th))
		return TC_ACT_UNSPEC;
	return first_chance(skb, me, next_peer(me, me, n), bpf_ntohs(ip->tot_len));
}

// bpf_fib_lookup is for GPL-compatible programs only: this one is dual-licensed.
char LICENSE[] SEC("license") = "Dual BSD/GPL";
