import re

import pytest
import yaml
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db


def test_schema_is_valid_openapi_3_and_describes_scopes(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    validate_schema(schema)  # raises on an invalid document
    assert schema["openapi"].startswith("3.0")
    assert "/api/v1/me" in schema["paths"]
    assert "`phi:read`" in schema["info"]["description"]
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


def test_schema_matches_behaviour_of_me(key_client):
    schema = yaml.safe_load(key_client().get("/api/schema/").content)
    documented = schema["paths"]["/api/v1/me"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    component = schema["components"]["schemas"][documented["$ref"].rsplit("/", 1)[1]]
    body = key_client(["leads:read"]).get("/api/v1/me").json()
    assert set(body) <= set(component["properties"])


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_serve_their_own_assets(client, page):
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, "the page loads scripts"
    for asset in assets:
        assert asset.startswith("/static/"), f"{asset} is not served by us"
        assert client.get(asset).status_code == 200
    assert not re.findall(r'(?:src|href)=["\']?(?:https?:)?//', html), "no asset from another host"
