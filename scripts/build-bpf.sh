#!/bin/sh
# Rebuilds the BPF objects from their sources: kernel forwarding of TCP sessions
# (src/dataplane/tcp/kernel/forward.bpf.o) and of UDP flows
# (src/dataplane/udp/kernel/forward.bpf.o), and the cluster's second chance
# (src/dataplane/cluster/second_chance.bpf.o). The object is committed so that building ringway needs no clang;
# CI runs this and fails if the result differs from the committed bytes.
#   apt-get install -y clang libbpf-dev    (Debian 12: clang 14, libbpf 1.1)
set -eu
cd "$(dirname "$0")/../src/dataplane"
# No -g: no BTF and no build paths in the object, so it is the same byte for byte
# wherever it is built. The multiarch include dir has asm/types.h.
for src in tcp/kernel/forward.bpf.c udp/kernel/forward.bpf.c cluster/second_chance.bpf.c; do
    clang -O2 -target bpf -I"/usr/include/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)" \
        -c "$src" -o "${src%.c}.o"
done
