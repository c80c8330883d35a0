"""The SSRF guard resolves a webhook host once, checks every address, and connects to exactly
the address it checked (DNS pinning), keeping the host name for the Host header and TLS."""

import pytest
from django.core.exceptions import ValidationError

from crm_platform.models import OutboxMessage
from integrations import relay
from integrations.models import WebhookDelivery
from integrations.tests.conftest import verified
from integrations.webhooks import _in_order, url_resolve
from tests.fakes.dns import FakeDns

pytestmark = pytest.mark.django_db
LIST = "/api/v1/webhook-endpoints"


@pytest.fixture
def writer_key_client(key_client):
    return key_client(["webhooks:write", "webhooks:read"])


def _url(receiver, host="hooks.partner.test"):
    return f"http://{host}:{receiver.port}/hook"


def test_a_name_resolving_to_loopback_is_refused_in_production_mode(key_client, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    writer = key_client(["webhooks:write", "webhooks:read"])
    with FakeDns({"hooks.partner.test": ["127.0.0.1"], "mixed.partner.test": ["93.184.216.34", "10.0.0.7"]}):
        for host in ("hooks.partner.test", "mixed.partner.test"):
            response = writer.post(LIST, {"url": _url(receiver, host)}, format="json")
            assert response.status_code == 400, host
            assert "private" in response.json()["error"]["fields"]["url"][0]
        unknown = writer.post(LIST, {"url": _url(receiver, "nowhere.partner.test")}, format="json")
    assert "does not resolve" in unknown.json()["error"]["fields"]["url"][0]
    assert receiver.requests == []


def test_delivery_connects_to_the_address_it_checked_even_if_dns_changes(make_endpoint, publish, receiver):
    # The first answer is the receiver; any later lookup would get 127.0.0.2, where nothing
    # listens. Resolving once and connecting to that answer is what makes the send succeed.
    with FakeDns({"hooks.partner.test": [["127.0.0.1"], ["127.0.0.2"]]}) as dns:
        _, secret = make_endpoint(url=_url(receiver))  # development mode: not resolved on save
        publish()
        relay.outbox_relay(budget_seconds=10)
    assert dns.lookups == ["hooks.partner.test"]
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.partner.test:{receiver.port}"
    assert request.path == "/hook"
    verified(secret, request)
    assert OutboxMessage.objects.exclude(destination="").get().status == OutboxMessage.Status.DELIVERED


def test_each_attempt_resolves_and_checks_afresh(make_endpoint, publish, receiver, settings):
    with FakeDns({"hooks.partner.test": ["127.0.0.1"]}) as dns:
        make_endpoint(url=_url(receiver))
        receiver.respond(500)
        publish()
        relay.outbox_relay(budget_seconds=10)  # attempt 1: 127.0.0.1, answered 500
        settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
        OutboxMessage.objects.exclude(destination="").update(next_attempt_at="2000-01-01T00:00:00Z")
        relay.outbox_relay(budget_seconds=10)  # attempt 2: refused before connecting
    assert len(dns.lookups) == 2 and len(receiver.requests) == 1
    row = OutboxMessage.objects.exclude(destination="").get()
    assert (row.status, row.last_error) == (OutboxMessage.Status.DEAD, "target address refused")
    assert WebhookDelivery.objects.count() == 1


def test_a_host_that_stops_resolving_is_retried_not_killed(make_endpoint, publish, receiver):
    with FakeDns({"hooks.partner.test": ["127.0.0.1"]}):
        make_endpoint(url=_url(receiver))
    publish()
    relay.outbox_relay(budget_seconds=10)  # outside the FakeDns block: the name resolves no more
    row = OutboxMessage.objects.exclude(destination="").get()
    assert (row.status, row.last_error) == (OutboxMessage.Status.FAILED, "host does not resolve")


def test_the_pinned_url_keeps_path_query_port_and_the_name_for_tls(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    with FakeDns({"api.partner.test": ["93.184.216.34"], "v6.partner.test": ["2606:2800:220:1::1"]}):
        target = url_resolve("https://api.partner.test/hooks/in?x=1")
        v6 = url_resolve("http://v6.partner.test:8080/h")
        with pytest.raises(ValidationError):
            url_resolve("ftp://api.partner.test/x")
    assert (target.url, target.host, target.server_name) == (
        "https://93.184.216.34:443/hooks/in?x=1",
        "api.partner.test",
        "api.partner.test",
    )
    assert (v6.url, v6.host) == ("http://[2606:2800:220:1::1]:8080/h", "v6.partner.test:8080")


def test_https_goes_to_the_pinned_address_with_the_name_as_sni_and_verifies_the_certificate(make_endpoint, publish):
    from tests.fakes.tls_receiver import TlsListener

    with TlsListener(names=["hooks.partner.test"]) as tls, FakeDns({"hooks.partner.test": ["127.0.0.1"]}):
        make_endpoint(url=f"https://hooks.partner.test:{tls.port}/hook")
        publish()
        relay.outbox_relay(budget_seconds=10)
    assert tls.server_names == ["hooks.partner.test"]  # the socket went to 127.0.0.1, TLS named the host
    row = OutboxMessage.objects.exclude(destination="").get()
    assert (row.status, row.last_error) == (OutboxMessage.Status.FAILED, "SSLError")  # self-signed: refused


def test_a_send_whose_first_address_refuses_goes_to_the_next_checked_one(make_endpoint, publish, receiver):
    # Nothing listens on 127.0.0.2 (the receiver is bound to 127.0.0.1): that connection fails
    # before anything is sent, so the same attempt goes on to the second address.
    with FakeDns({"hooks.partner.test": ["127.0.0.2", "127.0.0.1"]}) as dns:
        _, secret = make_endpoint(url=_url(receiver))
        publish()
        relay.outbox_relay(budget_seconds=10)
    assert dns.lookups == ["hooks.partner.test"]
    [request] = receiver.requests
    verified(secret, request)
    assert OutboxMessage.objects.exclude(destination="").get().status == OutboxMessage.Status.DELIVERED
    delivery = WebhookDelivery.objects.get()
    assert (delivery.succeeded, delivery.attempt, delivery.status_code) == (True, 1, 200)
    # The address that did not connect now comes last, for this host's next sends.
    with FakeDns({"hooks.partner.test": ["127.0.0.2", "127.0.0.1"]}):
        target = url_resolve(_url(receiver))
    assert [t.address for t in _in_order(target)] == ["127.0.0.1", "127.0.0.2"]


def test_when_no_address_connects_the_attempt_fails_and_is_retried(make_endpoint, publish, receiver):
    with FakeDns({"hooks.partner.test": ["127.0.0.2", "127.0.0.3"]}):
        make_endpoint(url=_url(receiver))
        publish()
        relay.outbox_relay(budget_seconds=10)
    assert receiver.requests == []
    row = OutboxMessage.objects.exclude(destination="").get()
    assert (row.status, row.last_error) == (OutboxMessage.Status.FAILED, "connection failed")
    assert WebhookDelivery.objects.get().error == "connection failed"


def test_a_target_keeps_its_other_checked_addresses_in_order(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    answers = ["2606:2800:220:1::1", "93.184.216.34", "93.184.216.35", "93.184.216.36"]
    with FakeDns({"api.partner.test": answers, "bad.partner.test": [*answers, "10.0.0.1"]}):
        target = url_resolve("https://user@api.partner.test:8443/in?x=1")
        with pytest.raises(ValidationError):  # every address is checked, not only those kept
            url_resolve("https://bad.partner.test/in")
    assert target.address == "2606:2800:220:1::1"
    assert target.alternates == ("93.184.216.34", "93.184.216.35")  # three addresses in all
    second = target.at("93.184.216.34")
    assert (second.url, second.host, second.server_name) == (
        "https://user@93.184.216.34:8443/in?x=1",
        "api.partner.test:8443",
        "api.partner.test",
    )
    with pytest.raises(ValueError):
        target.at("10.0.0.1")


@pytest.mark.parametrize("host", ["bücher.partner.test", "δοκιμή.partner.test", "日本.partner.test"])
def test_an_internationalised_host_name_goes_out_in_its_idna_form(writer_key_client, receiver, publish, host):
    """An IDN URL was accepted (201), then its test send answered 500 (the name went into the
    Host header as it is: UnicodeEncodeError) and every relay attempt failed as an "internal
    error" until the row died; a name latin-1 could encode went out as raw bytes a virtual host
    never matches. The name is looked up, sent and named to TLS in its punycode form."""
    writer = writer_key_client
    ascii_host = host.encode("idna").decode()
    with FakeDns({ascii_host: ["127.0.0.1"]}):
        response = writer.post(LIST, {"url": _url(receiver, host)}, format="json")
        assert response.status_code == 201, response.json()
        created = response.json()
        test = writer.post(f"{LIST}/{created['id']}/test")
        assert test.status_code == 200, test.content
        assert test.json()["succeeded"] is True
        publish()
        relay.outbox_relay(budget_seconds=10)
    assert [r.headers["host"] for r in receiver.requests] == [f"{ascii_host}:{receiver.port}"] * 2
    for request in receiver.requests:
        verified(created["secret"], request)
    assert OutboxMessage.objects.exclude(destination="").get().status == OutboxMessage.Status.DELIVERED


def test_a_host_name_with_no_idna_form_is_refused_with_400(writer_key_client):
    """60 "ü" make a valid label (URL validators count characters) whose punycode form is longer
    than DNS allows: it could never be looked up or sent, so it is refused at the door."""
    response = writer_key_client.post(LIST, {"url": f"http://{'ü' * 60}.partner.test/h"}, format="json")
    assert response.status_code == 400, response.content
    assert "internationalised" in response.json()["error"]["fields"]["url"][0]


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 (RFC 6052) of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the cloud metadata service
        "64:ff9b:1::a00:7",  # local-use NAT64 (RFC 8215) of 10.0.0.7
        "2002:a00:7::1",  # 6to4 of 10.0.0.7
        "::a00:7",  # IPv4-compatible 10.0.0.7
    ],
)
def test_an_ipv6_address_carrying_a_private_ipv4_is_refused_in_production_mode(
    writer_key_client, settings, receiver, address
):
    """Python counts these prefixes global whatever IPv4 address they carry; behind a NAT64
    gateway (DNS64 networks, IPv6-only cloud subnets) 64:ff9b::a9fe:a9fe reaches the metadata
    service. The address inside must be global too."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    with FakeDns({"hooks.partner.test": [address], "public.partner.test": ["64:ff9b::5db8:d822"]}):
        response = writer_key_client.post(LIST, {"url": _url(receiver)}, format="json")
        public = url_resolve(_url(receiver, "public.partner.test"))  # NAT64 of 93.184.216.34: fine
    assert response.status_code == 400, response.json()
    assert "private" in response.json()["error"]["fields"]["url"][0]
    assert public.address == "64:ff9b::5db8:d822"
