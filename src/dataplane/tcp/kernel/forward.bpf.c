// SPDX-License-Identifier: Apache-2.0
//
// ringway's in-kernel forwarding of established TCP sessions (`forward = "kernel"`).
//
// Both sockets of a session sit in RINGWAY_SOCKS, keyed by their socket cookie; this
// stream verdict runs for every chunk of bytes either socket receives and sends it
// out of the other socket, without waking ringway. RINGWAY_PEERS says who the other
// socket is and counts the bytes moved (the access log's and the metrics' byte
// counts, and how ringway knows a direction has been passed on before it forwards an
// EOF). A socket without a peer entry yet (the second half of setting a session up)
// passes its bytes to its own receive queue; RINGWAY_HELD counts them, so ringway can
// tell if any were held back.
//
// Rebuild the committed object with scripts/build-bpf.sh (CI checks it is identical).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct peer {
	__u64 cookie; // the other socket's
	__u64 bytes;  // bytes redirected to it
};

// Legacy map definitions (no BTF: the same bytes wherever it is built). Sizes are set
// by the loader.
#include "../../bpf_map_def.h"

struct bpf_map_def SEC("maps") RINGWAY_SOCKS = {
	.type = BPF_MAP_TYPE_SOCKHASH,
	.key_size = sizeof(__u64),
	.value_size = sizeof(__u32), // a socket's descriptor, on insertion
	.max_entries = 1024,
};

struct bpf_map_def SEC("maps") RINGWAY_PEERS = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u64),
	.value_size = sizeof(struct peer),
	.max_entries = 1024,
	.map_flags = BPF_F_NO_PREALLOC,
};

struct bpf_map_def SEC("maps") RINGWAY_HELD = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u64),
	.value_size = sizeof(__u64),
	.max_entries = 1024,
	.map_flags = BPF_F_NO_PREALLOC,
};

SEC("sk_skb/stream_verdict")
int ringway_forward(struct __sk_buff *skb)
{
	// The kernel hands over the empty buffer that carried a FIN too: sending it on
	// would fail (and break the other socket); ringway passes EOFs on itself.
	if (skb->len == 0)
		return SK_DROP;
	__u64 me = bpf_get_socket_cookie(skb);
	struct peer *p = bpf_map_lookup_elem(&RINGWAY_PEERS, &me);
	if (!p) {
		__u64 *held = bpf_map_lookup_elem(&RINGWAY_HELD, &me);
		if (held)
			__sync_fetch_and_add(held, skb->len);
		return SK_PASS;
	}
	__sync_fetch_and_add(&p->bytes, skb->len);
	return bpf_sk_redirect_hash(skb, &RINGWAY_SOCKS, &p->cookie, 0);
}

char LICENSE[] SEC("license") = "Apache-2.0";
