#!/usr/bin/env python3
"""The topic service the Paho interop run's broker asks (aMQTT's `TopicAuthHttpPlugin` protocol,
README "HTTP authentication and ACL"): it refuses SUBSCRIBE (`acc` 4) to the filters given on
the command line and grants every other question. It lets the broker refuse exactly
`test/nosubscribe`, which Paho's test_subscribe_failure subscribes to, while `#` and `+/+` (which
the suite also subscribes to, and which a `topic_acl` allow-list entry would have to cover, and so
would cover `test/nosubscribe` too) stay allowed.

    nosubscribe_acl.py PORT FILTER...

Listens on 127.0.0.1:PORT until SIGTERM or SIGINT; answers in aMQTT's `json` response mode
({"ok": true} / {"ok": false}) and reads the parameters as a JSON body, a form body or a query
string. It decides nothing else and keeps no state; it is a test fixture, not a product.
"""

import json
import signal
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SUBSCRIBE = "4"  # aMQTT's `acc` for SUBSCRIBE (1 receive, 2 publish)


def params_of(handler: BaseHTTPRequestHandler) -> dict:
    """The request's parameters, from whichever encoding the plugin used."""
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    if "json" in handler.headers.get("Content-Type", ""):
        return {k: str(v) for k, v in json.loads(body or b"{}").items()}
    if body:
        return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
    query = urllib.parse.urlsplit(handler.path).query
    return {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    refused = set(sys.argv[2:])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _handle(self):
            try:
                params = params_of(self)
            except (ValueError, UnicodeDecodeError):
                self.send_error(400)
                return
            grant = not (params.get("acc") == SUBSCRIBE and params.get("topic") in refused)
            body = json.dumps({"ok": grant}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _handle

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
