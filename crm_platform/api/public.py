"""The declared public routes: the only URL names that answer an anonymous request.

Everything else refuses one (401/403 for the API, a redirect to the login page for the
admin); tests/test_deny_by_default.py walks every URL pattern to prove it. Later issues add
signature-verified provider webhooks and signed tracking/unsubscribe links here.
"""

PUBLIC_ROUTES = frozenset(
    {
        "healthz",
        "readyz",
        "api-schema",
        "api-docs",
        "api-redoc",
        "admin:login",
        "admin:logout",
        # Signed by HubSpot (X-HubSpot-Signature-v3), checked before anything else happens.
        "hubspot-webhooks",
    }
)
