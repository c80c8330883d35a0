"""Walk every URL pattern of the product and prove that anything not on the declared public
list refuses an anonymous request."""

import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from crm_platform.api.public import PUBLIC_ROUTES

_CONVERTERS = {"int": "1", "uuid": str(uuid.UUID(int=1)), "slug": "x", "str": "x", "path": "x"}


def _route_to_url(route: str) -> str:
    def sample(match):
        converter = match.group(1) or "str"
        return _CONVERTERS.get(converter, "x")

    return re.sub(r"<(?:(\w+):)?\w+>", sample, route)


def _regex_to_url(regex: str) -> str:
    def group(match):
        body = match.group(2)
        if re.fullmatch(r"[\w|]+", body):  # an alternation of literals: take the first
            return body.split("|")[0]
        if "\\d" in body or "0-9" in body:
            return "1"
        return "x"

    url = re.sub(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)", group, regex)
    url = url.lstrip("^").rstrip("$").replace("\\Z", "")
    return url.replace("\\", "")


def _walk(patterns, prefix="", namespace=""):
    for pattern in patterns:
        raw = str(pattern.pattern)
        text = _regex_to_url(raw) if pattern.pattern.regex.pattern == raw else _route_to_url(raw)
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _walk(pattern.url_patterns, prefix + text, ns)
        elif isinstance(pattern, URLPattern):
            yield "/" + prefix + text, f"{namespace}{pattern.name}" if pattern.name else None


ROUTES = sorted(set(_walk(get_resolver().url_patterns)), key=lambda r: r[0])


def test_the_walk_finds_the_routes_we_know():
    names = {name for _, name in ROUTES}
    assert {"healthz", "readyz", "v1:me", "admin:index", "admin:crm_platform_apikey_changelist"} <= names
    assert len(ROUTES) > 50


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "name"), ROUTES, ids=[url for url, _ in ROUTES])
def test_route_refuses_anonymous_unless_declared_public(client, url, name):
    resolve(url)  # the sample URL must reach the pattern under test
    if name in PUBLIC_ROUTES:
        return
    for method in ("get", "post"):
        response = getattr(client, method)(url)
        if url.startswith("/admin/"):
            assert response.status_code == 302, f"{method} {url}"
            assert response["Location"].startswith("/admin/login/"), f"{method} {url}"
        else:
            assert response.status_code in (401, 403), f"{method} {url} answered {response.status_code}"
            assert set(response.json()["error"]) == {"code", "message", "fields"}


def test_public_list_names_only_routes_that_exist():
    names = {name for _, name in ROUTES}
    assert PUBLIC_ROUTES <= names
