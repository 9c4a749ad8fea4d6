"""A real SMTP server for the e-mail tests (aggregator/tests/mail.rs).

    python server.py PORT DIR

Listens on 127.0.0.1:PORT with aiosmtpd and prints "ready" once it answers. Each message
delivered is parsed with Python's own `email` package (an independent MIME parser) and written
to DIR as NNNN.json (written aside, then renamed: a reader never sees half a file) with
NNNN.eml beside it (the raw bytes):

    {"mail_from", "rcpt_tos": [...], "content_type": "multipart/alternative",
     "headers": {"Subject": decoded, ...}, "parts": [{"type": "text/plain", "body": decoded}, ...]}

Runs until killed.
"""
import email
import email.policy
import json
import os
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = [
            {"type": p.get_content_type(), "body": p.get_content()}
            for p in msg.walk()
            if not p.is_multipart()
        ]
        doc = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "content_type": msg.get_content_type(),
            "headers": {k: str(v) for k, v in msg.items()},
            "parts": parts,
        }
        with self.lock:
            self.n += 1
            name = f"{self.n:04}"
        with open(os.path.join(self.out, name + ".eml"), "wb") as f:
            f.write(raw)
        tmp = os.path.join(self.out, "." + name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, os.path.join(self.out, name + ".json"))
        return "250 Message accepted for delivery"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    c = Controller(Sink(out), hostname="127.0.0.1", port=port)
    c.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
