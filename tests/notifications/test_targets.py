"""Where a webhook may point: public addresses only, checked at subscription and again at delivery, connected to
the address that was checked."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from notifications.targets import TargetRefused, address_refusal, check_target


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("fc00::5", "private"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # an IPv4 address mapped into IPv6
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("240.0.0.1", "reserved"),
    ],
)
def test_non_public_addresses_are_refused(address, why):
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and why in refusal


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_a_network_the_site_allows_is_allowed_and_only_it(settings):
    settings.DUMPSITE_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32", "10.20.0.0/16"]
    assert address_refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert address_refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.2")) is not None
    assert address_refusal(ipaddress.ip_address("10.21.0.1")) is not None


@pytest.mark.parametrize(
    "url, says",
    [
        ("ftp://93.184.216.34/x", "Only http and https"),
        ("file:///etc/passwd", "Only http and https"),
        ("gopher://93.184.216.34:70/", "Only http and https"),
        ("http://user:pw@93.184.216.34/", "user name or password"),
        ("http:///nohost", "no host"),
        ("http://93.184.216.34:99999/", "Not a valid URL"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 written as one number
        ("http://0x7f.1/", "loopback"),
        ("http://localhost/", "loopback"),
        ("http://no-such-host.invalid/", "could not be resolved"),
    ],
)
def test_urls_that_are_refused_say_why(url, says):
    with pytest.raises(TargetRefused) as refused:
        check_target(url)
    assert says in refused.value.message


def test_a_public_url_is_taken_with_the_address_it_resolved_to(monkeypatch):
    answers = {"hooks.example.org": ["93.184.216.34"]}
    fake_dns(monkeypatch, answers)
    target = check_target("https://hooks.example.org/in?x=1")
    assert (target.scheme, target.host, target.port, target.path) == ("https", "hooks.example.org", 443, "/in?x=1")
    assert target.address == "93.184.216.34" and target.host_header == "hooks.example.org"
    assert check_target("http://hooks.example.org:8080").host_header == "hooks.example.org:8080"


def test_one_private_address_among_public_ones_refuses_the_url(monkeypatch):
    fake_dns(monkeypatch, {"mixed.example.org": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(TargetRefused, match="10.0.0.7, a private address"):
        check_target("https://mixed.example.org/")


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> None:
    """Name resolution answering from ``answers`` (changed by the test as it goes); literals resolve as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
