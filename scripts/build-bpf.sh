#!/bin/sh
# Rebuilds the kernel-forwarding BPF object (src/dataplane/tcp/kernel/forward.bpf.o)
# from its source. The object is committed so that building ringway needs no clang;
# CI runs this and fails if the result differs from the committed bytes.
#   apt-get install -y clang libbpf-dev    (Debian 12: clang 14, libbpf 1.1)
set -eu
cd "$(dirname "$0")/../src/dataplane/tcp/kernel"
# No -g: no BTF and no build paths in the object, so it is the same byte for byte
# wherever it is built. The multiarch include dir has asm/types.h.
clang -O2 -target bpf -I"/usr/include/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)" \
    -c forward.bpf.c -o forward.bpf.o
