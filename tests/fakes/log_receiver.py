"""A fast loopback webhook receiver for benchmarks: its own process, asyncio, HTTP/1.1 keep-alive.

    python -m tests.fakes.log_receiver --port 8123 --log /tmp/ids.log [--secret whsec_... --verify-every 100]

Answers every POST 200 `{"ok":true}` and appends its `webhook-id` header to the log, one a line
(every request, duplicates included: counting them is the point). With --secret it checks one
request in `--verify-every` with the `standardwebhooks` package (an independent implementation
of the spec) and logs `BADSIG <id>` lines for any that fail. Prints "ready <port>" once
listening; SIGTERM flushes the log and exits. The ThreadingHTTPServer receiver in
webhook_receiver.py closes each connection and costs a thread per request, which at hundreds of
requests a second on two cores would measure the receiver, not the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n" + b'{"ok":true}'


class Receiver:
    def __init__(self, log, secret: str | None, verify_every: int):
        self.log = log
        self.verify_every = verify_every
        self.seen = 0
        self.webhook = None
        if secret:
            from standardwebhooks import Webhook

            self.webhook = Webhook(secret)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                headers = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name:
                        headers[name.strip().lower().decode()] = value.strip().decode()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                webhook_id = headers.get("webhook-id", "-")
                self.log.write(webhook_id + "\n")
                self.seen += 1
                if self.webhook is not None and self.seen % self.verify_every == 0:
                    try:
                        self.webhook.verify(body, headers)
                    except Exception:  # any verification failure is what we log
                        self.log.write(f"BADSIG {webhook_id}\n")
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except asyncio.CancelledError:
            return  # shutting down with the client's keep-alive connection still open: nothing to report
        finally:
            writer.close()


async def serve(port: int, receiver: Receiver) -> None:
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", port, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--secret")
    parser.add_argument("--verify-every", type=int, default=100)
    args = parser.parse_args(argv)
    with open(args.log, "a", buffering=1 << 16) as log:
        asyncio.run(serve(args.port, Receiver(log, args.secret, max(1, args.verify_every))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
