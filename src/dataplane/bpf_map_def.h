// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only OR BSD-2-Clause
//
// Legacy map definitions (the layout aya reads from a "maps" section; libbpf 1.x no
// longer declares it) keep ringway's BPF objects free of BTF and debug paths, so each
// builds byte for byte the same anywhere. Shared by tcp/kernel/forward.bpf.c and
// cluster/second_chance.bpf.c.

#ifndef RINGWAY_BPF_MAP_DEF_H
#define RINGWAY_BPF_MAP_DEF_H

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

#endif
