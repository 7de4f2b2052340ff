#!/usr/bin/env python3
"""A stand-in for Jira, Confluence or Bitbucket accepting OAuth 1.0a two-legged impersonation.

Every request is checked as the products check a request signed by an Application Link's
trusted consumer, with oauthlib's SignatureOnlyEndpoint (a third-party verifier, not the
filter's code): RSA-SHA1 only, the configured consumer key and its public key, a timestamp
within 300 s, a (timestamp, nonce) never seen before, `oauth_token` present and empty, and the
user named by `xoauth_requestor_id` exactly once in the query. The URL the signature covers is
rebuilt from --base-url (the product's configured base URL) and the request path, as the products
do: never from the address Envoy connected to.

Every request is answered 200 with JSON: `valid`, `reason` (when not valid), `user` (every
xoauth_requestor_id value, query then body), `method`, `path`, `headers` (names lowercased,
repeated headers joined by ", "), `authorization_headers` (how many arrived), `body`, and the
`oauth` parameters seen. `GET /__verifier/log` answers every check so far (the control path is
not itself checked). The line `READY <port>` on stdout says it listens (127.0.0.1, --port 0
picks a free port). It exits when its stdin closes, so it never outlives the test that started
it.

`--keygen DIR` instead writes a fresh 2048-bit RSA key pair, DIR/private.pem (PKCS#8) and
DIR/public.pem, and exits: no private key is ever committed.

Needs oauthlib 4 with PyJWT and cryptography (`make oauth1` installs the pinned versions).
"""

import argparse
import json
import os
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint
from oauthlib.oauth1.rfc5849 import errors

CONTROL_PREFIX = "/__verifier/"
FORM = "application/x-www-form-urlencoded"
MAX_BODY = 8 << 20
PRINTABLE = set(string.ascii_letters + string.digits + string.punctuation)
# Parameters a client could use to name a user; only the filter's own xoauth_requestor_id may
# arrive, and user_id never.
REQUESTOR = "xoauth_requestor_id"


def keygen(directory):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    os.makedirs(directory, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path = os.path.join(directory, "private.pem")
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(private)
    with open(os.path.join(directory, "public.pem"), "wb") as out:
        out.write(public)


class Validator(RequestValidator):
    """What an Application Link with incoming 2-legged OAuth and impersonation accepts."""

    enforce_ssl = False
    allowed_signature_methods = ["RSA-SHA1"]
    # oauthlib's defaults want 20-30 alphanumeric characters; the products take any key and
    # nonce, so any length from 1 (key) or 16 (nonce, >= 128 bits in hex or base62) is fine.
    client_key_length = (1, 255)
    nonce_length = (16, 128)
    dummy_client = "dummy-client"

    def __init__(self, consumer_key, public_pem, lifetime):
        super().__init__()
        self.consumer_key = consumer_key
        self.public_pem = public_pem
        self.lifetime = lifetime
        self.seen = set()
        self.lock = threading.Lock()

    @property
    def timestamp_lifetime(self):
        return self.lifetime

    def check_client_key(self, client_key):
        return 0 < len(client_key) <= 255 and set(client_key) <= PRINTABLE

    def validate_client_key(self, client_key, request):
        return client_key == self.consumer_key

    def get_rsa_key(self, client_key, request):
        return self.public_pem

    def validate_timestamp_and_nonce(self, client_key, timestamp, nonce, request,
                                     request_token=None, access_token=None):
        with self.lock:
            if (client_key, timestamp, nonce) in self.seen:
                request.refusal = "nonce reused: (timestamp, nonce) seen before"
                return False
            self.seen.add((client_key, timestamp, nonce))
            return True


class Verifier:
    def __init__(self, base_url, validator):
        self.base_url = base_url.rstrip("/")
        self.validator = validator
        self.endpoint = SignatureOnlyEndpoint(validator)
        self.log = []
        self.lock = threading.Lock()

    def check(self, method, target, headers, body):
        """The verdict on one request: (valid, reason, oauth parameters seen)."""
        authorizations = [v for k, v in headers if k.lower() == "authorization"]
        if len(authorizations) > 1:
            return False, "several Authorization headers", {}
        if not authorizations or not authorizations[0].lstrip().lower().startswith("oauth "):
            return False, "no OAuth Authorization header", {}
        query = urlsplit(target).query
        try:
            query_pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
        except ValueError as e:
            return False, f"query does not decode: {e}", {}
        form = self.signed_body(method, headers, body)
        if form is None:
            return False, "form body is not UTF-8", {}
        body_pairs = parse_qsl(form, keep_blank_values=True) if form else []
        requestors = [v for k, v in query_pairs if k == REQUESTOR]
        if len(requestors) != 1:
            return False, f"{REQUESTOR} {len(requestors)} times in the query (needs exactly 1)", {}
        if any(k == REQUESTOR for k, _ in body_pairs):
            return False, f"{REQUESTOR} in the body", {}
        if any(k == "user_id" for k, _ in query_pairs + body_pairs):
            return False, "user_id present", {}
        oauth_headers = {"Authorization": authorizations[0]}
        if form:
            oauth_headers["Content-Type"] = FORM
        uri = self.base_url + target
        # The reason for a malformed request first, without touching the nonce record.
        try:
            request = self.endpoint._create_request(uri, method, form, oauth_headers)
            self.endpoint._check_transport_security(request)
            self.endpoint._check_mandatory_parameters(request)
        except errors.OAuth1Error as e:
            return False, f"oauthlib: {e.description}", {}
        except ValueError as e:
            return False, f"oauthlib: {e}", {}
        seen = dict(request.oauth_params)
        seen.pop("oauth_signature", None)
        if request.resource_owner_key is None:
            return False, "oauth_token missing (2-legged impersonation sends it empty)", seen
        if request.resource_owner_key != "":
            return False, "oauth_token not empty", seen
        ok, request = self.endpoint.validate_request(uri, method, form, oauth_headers)
        if ok:
            return True, None, seen
        refusal = getattr(request, "refusal", None) if request is not None else None
        if refusal:
            return False, refusal, seen
        log = request.validator_log if request is not None else {}
        if not log.get("client", True):
            return False, "unknown consumer key", seen
        if not log.get("signature", True):
            return False, "bad signature", seen
        return False, "refused by oauthlib", seen

    @staticmethod
    def signed_body(method, headers, body):
        """The body text that takes part in the signature: a POST form body, as the products'
        servlet container parses form bodies of POST only; "" when none; None when not UTF-8."""
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        media = content_type.split(";", 1)[0].strip().lower()
        if method != "POST" or media != FORM or not body:
            return ""
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def snapshot(self):
        with self.lock:
            checks = list(self.log)
        return {
            "checks": checks,
            "verified": sum(1 for c in checks if c["valid"]),
            "refused": sum(1 for c in checks if not c["valid"]),
        }


def make_handler(verifier):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "oauth1-verifier"

        def log_message(self, format, *args):
            # Request lines only: never a header value (Authorization) in the log.
            sys.stderr.write("verifier: %s\n" % (format % args))

        def read_body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks, size = [], 0
                while True:
                    line = self.rfile.readline(1024)
                    length = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if length == 0:
                        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    size += length
                    if size > MAX_BODY:
                        raise ValueError("body too large")
                    chunks.append(self.rfile.read(length))
                    self.rfile.readline(1024)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ValueError("body too large")
            return self.rfile.read(length) if length else b""

        def answer(self, payload):
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def handle_any(self):
            try:
                body = self.read_body()
            except ValueError as e:
                self.send_error(400, str(e))
                self.close_connection = True
                return
            if self.path.startswith(CONTROL_PREFIX):
                if self.path == CONTROL_PREFIX + "log":
                    self.answer(verifier.snapshot())
                else:
                    self.send_error(404)
                return
            pairs = list(self.headers.items())
            valid, reason, oauth = verifier.check(self.command, self.path, pairs, body)
            query = parse_qsl(urlsplit(self.path).query, keep_blank_values=True)
            form = Verifier.signed_body(self.command, pairs, body) or ""
            users = [v for k, v in query + parse_qsl(form, keep_blank_values=True)
                     if k == REQUESTOR]
            headers = {}
            for name, value in pairs:
                # http.server reads header bytes as Latin-1; UTF-8 is what a filter sends.
                value = value.encode("latin-1", "replace").decode("utf-8", "replace")
                name = name.lower()
                headers[name] = headers[name] + ", " + value if name in headers else value
            entry = {
                "valid": valid,
                "reason": reason,
                "user": users,
                "method": self.command,
                "path": self.path,
                "oauth": oauth,
            }
            verifier.record(entry)
            self.answer(dict(entry, headers=headers,
                             authorization_headers=sum(1 for k, _ in pairs
                                                       if k.lower() == "authorization"),
                             body=body.decode("utf-8", "replace")))

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keygen", metavar="DIR", help="write a fresh key pair into DIR and exit")
    parser.add_argument("--base-url", default="https://jira.example.com")
    parser.add_argument("--consumer-key")
    parser.add_argument("--public-key", metavar="PEM_FILE")
    parser.add_argument("--timestamp-lifetime", type=int, default=300)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.keygen:
        keygen(args.keygen)
        return
    if not args.consumer_key or not args.public_key:
        parser.error("--consumer-key and --public-key are needed (or --keygen DIR)")
    with open(args.public_key) as f:
        public_pem = f.read()
    validator = Validator(args.consumer_key, public_pem, args.timestamp_lifetime)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Verifier(args.base_url, validator)))
    server.daemon_threads = True

    def exit_when_stdin_closes():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
