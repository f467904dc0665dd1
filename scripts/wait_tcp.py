#!/usr/bin/env python3
"""Waits until every HOST:PORT given accepts a TCP connection, or exits 1 after TIMEOUT
seconds.  usage: scripts/wait_tcp.py TIMEOUT HOST:PORT..."""
import socket, sys, time

timeout, targets = float(sys.argv[1]), sys.argv[2:]
deadline = time.time() + timeout
for target in targets:
    host, port = target.rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                sys.exit(f"{target} did not accept connections within {timeout:g} s")
            time.sleep(0.1)
