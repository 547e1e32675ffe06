"""Registrable domains (the part a registrant controls), public-suffix aware."""

from __future__ import annotations

import unicodedata
from functools import cache
from urllib.parse import urlsplit

import tldextract


@cache
def _suffix_extractor() -> tldextract.TLDExtract:
    # No list URLs and no cache directory: the suffix list snapshot bundled with the package is
    # used, so extraction never reaches the network or writes cache files.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


# DNS's limits on a name and on each of its labels: a longer "host" names no site.
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63


def registrable_domain(url_or_host: str) -> str | None:
    """`https://news.bbc.co.uk/x` -> `bbc.co.uk`; None for IPs, `localhost`, unknown suffixes,
    and hosts longer than DNS allows."""
    host = _host(url_or_host)
    if (
        host is None
        or len(host) > MAX_HOST_LENGTH
        or any(len(label) > MAX_LABEL_LENGTH for label in host.split("."))
    ):
        return None
    return _suffix_extractor()(host).top_domain_under_public_suffix or None


def _host(url_or_host: str) -> str | None:
    value = url_or_host.strip()
    if "://" not in value:
        value = "//" + value
    try:
        hostname = urlsplit(value).hostname
    except ValueError:
        return None
    if not hostname:
        return None
    normalised = unicodedata.normalize("NFKC", hostname).lower().strip(".")
    return ".".join(_unicode_label(label) for label in normalised.split("."))


def _unicode_label(label: str) -> str:
    """Punycode labels in Unicode form, so `xn--bcher-kva.de` and `bücher.de` are one domain."""
    if not label.startswith("xn--"):
        return label
    try:
        return label.encode("ascii").decode("idna")
    except UnicodeError:
        return label
