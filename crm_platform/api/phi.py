"""Medical fields (PHI) in API output: shown only to callers holding `phi:read` (API keys with
the scope; staff with compliance.view_phi). Serializers list their medical fields in
`phi_fields`; the fields are left out for everyone else."""

from rest_framework import serializers

from crm_platform.api.permissions import has_scope
from crm_platform.api.scopes import PHI_READ


def phi_context(request) -> dict:
    """Serializer context for a request: whether it may see PHI."""
    return {"request": request, "phi": has_scope(request, PHI_READ)}


class PhiFieldsMixin(serializers.Serializer):
    phi_fields: tuple[str, ...] = ()

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self._may_see_phi():
            for name in self.phi_fields:
                data.pop(name, None)
        return data

    def _may_see_phi(self) -> bool:
        context = self.context
        if "phi" in context:
            return bool(context["phi"])
        request = context.get("request")
        return request is not None and has_scope(request, PHI_READ)
