#!/usr/bin/env python3
"""Three tiny TCP demo backends for the quickstart: each greets with its name, then echoes.

    python3 scripts/demo_backends.py 9001 9002 9003

Standard library only. Listens on 127.0.0.1; stops after --lifetime seconds (default 600).
"""
import argparse
import socketserver
import sys
import threading
import time


def handler_for(name):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            # Health checks and readiness probes connect and close at once, often with
            # a reset: that ends the conversation, it is not an error.
            try:
                self.request.sendall(f"hello from {name}\n".encode())
                while True:
                    data = self.request.recv(65536)
                    if not data:
                        break
                    self.request.sendall(data)
            except (ConnectionError, TimeoutError):
                pass

    return Handler


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A peer that resets before the handler runs is routine; anything else is shown.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ports", type=int, nargs="+")
    ap.add_argument("--lifetime", type=float, default=600)
    args = ap.parse_args()
    for i, port in enumerate(args.ports, 1):
        srv = Server(("127.0.0.1", port), handler_for(f"backend-{i} (:{port})"))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(f"demo backends listening on 127.0.0.1:{', '.join(map(str, args.ports))}", flush=True)
    time.sleep(args.lifetime)


if __name__ == "__main__":
    main()
