#!/usr/bin/env python3
"""The ECMP lab's three backends (scripts/ecmp-lab.sh), in one process: on 10.97.0.N,
TCP port 8000 answers each connection with "bN|10.98.K.1\\n" (its backend, and the
node that carried it) then echoes; UDP port 5300 answers
each datagram with b"bN|" + the sender's address and port (which node carried it:
10.98.K.1 is node K; and which of its sockets) + b"|" + the datagram."""

import socket
import socketserver
import threading

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


class Tcp(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def tcp_handler(name):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                node = self.request.getpeername()[0]
                self.request.sendall(f"{name}|{node}\n".encode())
                while True:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    self.request.sendall(data)
            except OSError:
                return

    return Handler


def udp_loop(sock, name):
    while True:
        data, peer = sock.recvfrom(65536)
        try:
            sock.sendto(f"{name}|{peer[0]}:{peer[1]}|".encode() + data, peer)
        except OSError:
            pass


def main():
    threads = []
    for n in (1, 2, 3):
        name, ip = f"b{n}", f"10.97.0.{n}"
        server = Tcp((ip, 8000), tcp_handler(name))
        threads.append(threading.Thread(target=server.serve_forever, daemon=True))
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # The check sends thousands of datagrams at once; the default buffer (~200 KiB)
        # overflowed in one CI run (UdpRcvbufErrors here, not a loss in ringway).
        u.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        u.bind((ip, 5300))
        threads.append(threading.Thread(target=udp_loop, args=(u, name), daemon=True))
    for t in threads:
        t.start()
    print("backends up", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
