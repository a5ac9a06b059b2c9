"""A stand-in third-party library: it only logs through its own module logger."""

import logging

log = logging.getLogger("vendorlib.client")


def fetch(n: int) -> list[int]:
    log.debug("vendorlib fetching %d items", n)
    log.info("vendorlib fetched %d items", n)
    return list(range(n))
