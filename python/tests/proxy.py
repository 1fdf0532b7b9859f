"""Two servers behind one address: a Unix-socket proxy that sends each new
connection to the next backend in turn (a DNS round robin or a load
balancer in front of several replicas)."""
import itertools
import os
import socket
import threading


class AlternatingProxy:
    def __init__(self, sockdir: str, port: int, backends):
        self.path = os.path.join(sockdir, ".s.PGSQL.%d" % port)
        self.sockdir, self.port = sockdir, port
        self.backends = [os.path.join(d, ".s.PGSQL.%d" % p) for d, p in backends]
        self._next = itertools.cycle(self.backends)
        self.served = []  # backend chosen for each connection
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(64)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            backend = next(self._next)
            self.served.append(backend)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(backend)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop = True
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
