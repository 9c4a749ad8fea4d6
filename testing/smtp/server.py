"""A real SMTP server for the e-mail tests (aggregator/tests/mail.rs).

    python server.py PORT DIR [--tls implicit|starttls --cert CERT.pem --key KEY.pem]
                              [--login USER:PASSWORD]

Listens on 127.0.0.1:PORT with aiosmtpd and prints "ready" once it answers. Each message
delivered is parsed with Python's own `email` package (an independent MIME parser) and written
to DIR as NNNN.json (written aside, then renamed: a reader never sees half a file) with
NNNN.eml beside it (the raw bytes):

    {"mail_from", "rcpt_tos": [...], "content_type": "multipart/alternative",
     "structure": every part's type, multiparts too, depth first ("multipart/alternative",
     "text/plain", "multipart/related", "text/html", "image/png"),
     "headers": {"Subject": decoded, ...}, "parts": [{"type": "text/plain", "body": decoded,
     "content_id": "<...>" or null, "disposition": "inline" or null}, ...],
     "tls": true when the message came over TLS, "login": the user who authenticated or null,
     "eml": "NNNN.eml"}

A binary part (an inline image) has "body": null and "file": "NNNN-K.bin", its decoded bytes
written beside the JSON (K: the part's place among the leaf parts, from 0).

`--tls implicit`: TLS from the first byte (smtps, Python's ssl with CERT and KEY); `--tls
starttls`: plain until STARTTLS, which is required before MAIL (aiosmtpd's require_starttls).
`--login USER:PASSWORD`: AUTH PLAIN/LOGIN is required, offered only over TLS, and only that
pair is taken; each attempt is appended to DIR/auth.log as "USER ok" or "USER refused".

Runs until killed.
"""
import argparse
import email
import email.policy
import json
import logging
import os
import ssl
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        with self.lock:
            self.n += 1
            name = f"{self.n:04}"
        parts = []
        for p in msg.walk():
            if p.is_multipart():
                continue
            body = p.get_content()
            part = {
                "type": p.get_content_type(),
                "body": body,
                "content_id": p["Content-ID"],
                "disposition": p.get_content_disposition(),
            }
            if isinstance(body, bytes):
                part["body"] = None
                part["file"] = f"{name}-{len(parts)}.bin"
                with open(os.path.join(self.out, part["file"]), "wb") as f:
                    f.write(body)
            parts.append(part)
        doc = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "content_type": msg.get_content_type(),
            "structure": [p.get_content_type() for p in msg.walk()],
            "eml": name + ".eml",
            "headers": {k: str(v) for k, v in msg.items()},
            "parts": parts,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": session.auth_data.login.decode()
            if isinstance(session.auth_data, LoginPassword)
            else None,
        }
        with open(os.path.join(self.out, name + ".eml"), "wb") as f:
            f.write(raw)
        tmp = os.path.join(self.out, "." + name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, os.path.join(self.out, name + ".json"))
        return "250 Message accepted for delivery"


class Login:
    """Takes one USER:PASSWORD and writes every attempt to DIR/auth.log."""

    def __init__(self, out, pair):
        self.path = os.path.join(out, "auth.log")
        user, _, password = pair.partition(":")
        self.user, self.password = user.encode(), password.encode()
        self.lock = threading.Lock()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
        with self.lock, open(self.path, "a") as f:
            f.write(f"{login} {'ok' if ok else 'refused'}\n")
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("port", type=int)
    a.add_argument("out")
    a.add_argument("--tls", choices=["implicit", "starttls"])
    a.add_argument("--cert")
    a.add_argument("--key")
    a.add_argument("--login")
    args = a.parse_args()
    os.makedirs(args.out, exist_ok=True)
    kw = {}
    if args.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        if args.tls == "implicit":
            # The whole connection is TLS, which aiosmtpd's auth_require_tls does not see
            # (it means STARTTLS): AUTH is offered from the start, and its warning about
            # that is beside the point here.
            kw.update(ssl_context=ctx, auth_require_tls=False)
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            logging.getLogger("mail.log").addFilter(
                lambda r: "auth_require_tls == False" not in r.getMessage()
            )
        else:
            kw.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
    if args.login:
        kw.update(authenticator=Login(args.out, args.login), auth_required=True)
        # aiosmtpd itself still sets the deprecated Session.login_data on each login, and
        # logs that it is deprecated.
        logging.getLogger("mail.log").addFilter(
            lambda r: "login_data is deprecated" not in r.getMessage()
        )
    c = Controller(Sink(args.out), hostname="127.0.0.1", port=args.port, **kw)
    c.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
