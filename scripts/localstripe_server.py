"""localstripe (a fake Stripe API) for the local stack and the tests, bound to 127.0.0.1 only.

localstripe's own CLI binds every interface and persists its store to /tmp/localstripe.pickle on
every write; this launcher binds loopback, keeps the store in memory (a restart forgets it, as
a test fake should), and registers the webhook endpoint(s) it signs events for, so the billing
service receives `payment_intent.succeeded` & co through the gateway like it would from Stripe.

localstripe is GPL-3.0: a dev/test tool (root `dev` dependency group), never imported by a
service.

    python scripts/localstripe_server.py --port 8420 \
        --webhook http://127.0.0.1:8080/api/v1/payments/webhook=whsec_local_1
"""

from __future__ import annotations

import argparse
import logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument(
        "--webhook", action="append", default=[], metavar="URL=SECRET",
        help="post signed events to URL with SECRET (repeatable)",
    )
    args = parser.parse_args()

    from aiohttp import web
    from localstripe import resources, server, webhooks

    # In memory only: the upstream store pickles itself to a fixed /tmp path on every write.
    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    resources.Store.try_load_from_disk = lambda self: None  # type: ignore[method-assign]

    for i, spec in enumerate(args.webhook):
        url, sep, secret = spec.rpartition("=")
        if not sep or not url.startswith("http") or not secret:
            parser.error(f"--webhook wants URL=SECRET, got {spec!r}")
        webhooks.register_webhook(f"switchboard-{i}", url, secret, None)

    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.INFO)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"localstripe on http://{args.host}:{args.port}", flush=True)
    web.run_app(server.app, host=args.host, port=args.port, access_log=access, print=None)


if __name__ == "__main__":
    main()
