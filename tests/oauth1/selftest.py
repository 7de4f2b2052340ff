#!/usr/bin/env python3
"""Proves verifier.py on its own, before any filter is involved: requests signed here (with
oauthlib's base-string functions and cryptography's RSA, nothing of the filter) are accepted, and
each way of getting one wrong is refused with its reason. Run by tests/e2e_oauth1.rs
(`verifier_alone_accepts_signed_requests_and_refuses_the_rest`); prints one line per case and
exits non-zero on the first case that does not hold.
"""

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from oauthlib.oauth1.rfc5849 import signature as S

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = "https://jira.example.com"
CONSUMER = "ara-selftest"


def enc(text):
    return quote(text, safe="-._~")


class Signer:
    def __init__(self, private_pem, consumer=CONSUMER, base=BASE):
        self.key = serialization.load_pem_private_key(private_pem, None)
        self.consumer = consumer
        self.base = base

    def authorization(self, method, target, form="", token="", timestamp=None, nonce=None,
                      method_name="RSA-SHA1", drop=()):
        oauth = [
            ("oauth_consumer_key", self.consumer),
            ("oauth_nonce", nonce or secrets.token_hex(16)),
            ("oauth_signature_method", method_name),
            ("oauth_timestamp", str(timestamp or int(time.time()))),
            ("oauth_token", token),
            ("oauth_version", "1.0"),
        ]
        oauth = [(k, v) for k, v in oauth if k not in drop]
        path, _, query = target.partition("?")
        params = S.collect_parameters(uri_query=query, body=form) + oauth
        base = S.signature_base_string(method, S.base_string_uri(self.base + path),
                                       S.normalize_parameters(params))
        sig = base64.b64encode(self.key.sign(base.encode(), padding.PKCS1v15(), hashes.SHA1()))
        oauth.append(("oauth_signature", sig.decode()))
        return "OAuth " + ", ".join(f'{k}="{enc(v)}"' for k, v in oauth)


def send(port, method, target, headers=None, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{target}", method=method,
                                     data=body.encode() if body is not None else None,
                                     headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def main():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(HERE, "verifier.py"), "--keygen", tmp],
                       check=True)
        private = open(os.path.join(tmp, "private.pem"), "rb").read()
        assert private.startswith(b"-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM"
        assert os.stat(os.path.join(tmp, "private.pem")).st_mode & 0o077 == 0, "private key 0600"
        other = os.path.join(tmp, "other")
        subprocess.run([sys.executable, os.path.join(HERE, "verifier.py"), "--keygen", other],
                       check=True)
        verifier = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "verifier.py"), "--base-url", BASE,
             "--consumer-key", CONSUMER, "--public-key", os.path.join(tmp, "public.pem")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = verifier.stdout.readline()
            assert line.startswith("READY "), f"no READY line: {line!r}"
            port = int(line.split()[1])
            run_cases(port, Signer(private),
                      Signer(open(os.path.join(other, "private.pem"), "rb").read()), failures)
        finally:
            verifier.stdin.close()
            verifier.wait(timeout=10)
    if failures:
        print(f"{len(failures)} case(s) failed: {failures}")
        sys.exit(1)
    print("verifier self-test: all cases hold")


def run_cases(port, signer, stranger, failures):
    expected = {True: 0, False: 0}

    def case(name, reply, valid, reason_has=None, user=None):
        expected[valid] += 1
        ok = reply["valid"] == valid
        if reason_has is not None:
            ok = ok and reason_has in (reply["reason"] or "")
        if user is not None:
            ok = ok and reply["user"] == user
        print(f"{'ok  ' if ok else 'FAIL'} {name}: valid={reply['valid']} reason={reply['reason']!r} user={reply['user']}")
        if not ok:
            failures.append(name)

    target = "/rest/api/2/search?jql=project%20%3D%20ABC&maxResults=5&xoauth_requestor_id=alice"
    auth = signer.authorization("GET", target)
    case("signed GET", send(port, "GET", target, {"Authorization": auth}), True, user=["alice"])
    case("same request again (nonce reused)", send(port, "GET", target, {"Authorization": auth}),
         False, "nonce reused")
    tampered = target.replace("maxResults=5", "maxResults=6")
    case("query changed after signing",
         send(port, "GET", tampered, {"Authorization": signer.authorization("GET", target)}),
         False, "bad signature")
    other_user = target.replace("alice", "admin")
    case("user changed after signing",
         send(port, "GET", other_user, {"Authorization": signer.authorization("GET", target)}),
         False, "bad signature")
    case("signed with another key",
         send(port, "GET", target, {"Authorization": stranger.authorization("GET", target)}),
         False, "bad signature")
    case("signed for another base URL",
         send(port, "GET", target,
              {"Authorization": Signer(signer_pem(signer), base="http://127.0.0.1:8080")
               .authorization("GET", target)}),
         False, "bad signature")
    case("signed as POST, sent as GET",
         send(port, "GET", target, {"Authorization": signer.authorization("POST", target)}),
         False, "bad signature")
    case("timestamp 301 s old",
         send(port, "GET", target,
              {"Authorization": signer.authorization("GET", target, timestamp=int(time.time()) - 301)}),
         False, "Timestamp")
    case("timestamp 250 s old",
         send(port, "GET", target,
              {"Authorization": signer.authorization("GET", target, timestamp=int(time.time()) - 250)}),
         True, user=["alice"])
    case("unknown consumer key",
         send(port, "GET", target,
              {"Authorization": Signer(signer_pem(signer), consumer="someone-else")
               .authorization("GET", target)}),
         False, "consumer")
    case("HMAC-SHA1 instead of RSA-SHA1",
         send(port, "GET", target,
              {"Authorization": signer.authorization("GET", target, method_name="HMAC-SHA1")}),
         False, "HMAC-SHA1")
    case("oauth_token missing",
         send(port, "GET", target,
              {"Authorization": signer.authorization("GET", target, drop=("oauth_token",))}),
         False, "oauth_token missing")
    case("oauth_token not empty",
         send(port, "GET", target,
              {"Authorization": signer.authorization("GET", target, token="abc")}),
         False, "oauth_token not empty")
    bare = "/rest/api/2/myself"
    case("no xoauth_requestor_id",
         send(port, "GET", bare, {"Authorization": signer.authorization("GET", bare)}),
         False, "0 times")
    twice = bare + "?xoauth_requestor_id=admin&xoauth_requestor_id=alice"
    case("xoauth_requestor_id twice, signed",
         send(port, "GET", twice, {"Authorization": signer.authorization("GET", twice)}),
         False, "2 times")
    encoded = bare + "?xoauth%5Frequestor%5Fid=admin&xoauth_requestor_id=alice"
    case("percent-encoded xoauth_requestor_id counts",
         send(port, "GET", encoded, {"Authorization": signer.authorization("GET", encoded)}),
         False, "2 times")
    user_id = bare + "?user_id=admin&xoauth_requestor_id=alice"
    case("user_id present, signed",
         send(port, "GET", user_id, {"Authorization": signer.authorization("GET", user_id)}),
         False, "user_id")
    case("no Authorization", send(port, "GET", target), False, "no OAuth")
    spaced = bare + "?xoauth_requestor_id=Zo%C3%AB%20Doe"
    case("username with a space and non-ASCII",
         send(port, "GET", spaced, {"Authorization": signer.authorization("GET", spaced)}),
         True, user=["Zoë Doe"])

    post = "/rest/api/2/issue?xoauth_requestor_id=alice"
    form = "summary=a+b%2Bc&labels=x&labels=y&empty="
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
    case("form POST signed over its body",
         send(port, "POST", post, dict(headers, Authorization=signer.authorization("POST", post, form)), form),
         True, user=["alice"])
    case("form POST body changed after signing",
         send(port, "POST", post,
              dict(headers, Authorization=signer.authorization("POST", post, form)),
              form.replace("x", "z")),
         False, "bad signature")
    case("form POST signed without its body",
         send(port, "POST", post, dict(headers, Authorization=signer.authorization("POST", post)), form),
         False, "bad signature")
    case("form POST with xoauth_requestor_id in the body",
         send(port, "POST", post,
              dict(headers, Authorization=signer.authorization("POST", post, form + "&xoauth_requestor_id=admin")),
              form + "&xoauth_requestor_id=admin"),
         False, "in the body")
    json_body = '{"fields": {"summary": "a=b&c"}}'
    case("JSON POST: body not signed",
         send(port, "POST", post,
              {"Content-Type": "application/json", "Authorization": signer.authorization("POST", post)},
              json_body),
         True, user=["alice"])
    big = "&".join(f"f{i}={'v' * 90}" for i in range(2000))
    case("200 KB form POST",
         send(port, "POST", post, dict(headers, Authorization=signer.authorization("POST", post, big)), big),
         True, user=["alice"])

    log = send(port, "GET", "/__verifier/log")
    print(f"log: {log['verified']} verified, {log['refused']} refused of {len(log['checks'])}")
    if (log["verified"], log["refused"]) != (expected[True], expected[False]):
        failures.append(f"log counts {log['verified']} verified / {log['refused']} refused, "
                        f"expected {expected[True]} / {expected[False]}")


def signer_pem(signer):
    return signer.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())


if __name__ == "__main__":
    main()
