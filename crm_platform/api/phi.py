"""Medical fields (PHI) in API output: shown only to callers holding `phi:read` (API keys with
the scope; staff with compliance.view_phi). Serializers list their medical fields in
`phi_fields`; the fields are left out for everyone else.

Every response that does show them is audited (action `phi.read`: object, its contact, field
names, actor, request id, IP): one audit row per object, written in one INSERT per response
for lists (PhiListSerializer collects the reads of its children)."""

from rest_framework import serializers

from crm_platform.api.permissions import has_scope
from crm_platform.api.scopes import PHI_READ

# Context key under which a list serializer collects its children's PHI reads.
_READS = "_phi_reads"


def phi_context(request) -> dict:
    """Serializer context for a request: whether it may see PHI."""
    return {"request": request, "phi": has_scope(request, PHI_READ)}


class PhiListSerializer(serializers.ListSerializer):
    """many=True for PhiFieldsMixin serializers: audits the whole list in one INSERT."""

    def to_representation(self, data):
        context = self.context
        outer = _READS in context  # nested in another collecting list: let that one write
        if not outer:
            context[_READS] = []
        try:
            result = super().to_representation(data)
            if not outer:
                _audit(context, context[_READS], self.child.phi_fields)
        finally:
            if not outer:
                context.pop(_READS, None)
        return result


class PhiFieldsMixin(serializers.Serializer):
    phi_fields: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # many=True builds Meta.list_serializer_class: ours, unless a serializer names its own.
        meta = getattr(cls, "Meta", None)
        if meta is None:
            cls.Meta = type("Meta", (), {"list_serializer_class": PhiListSerializer})
        elif not hasattr(meta, "list_serializer_class"):
            meta.list_serializer_class = PhiListSerializer

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self._may_see_phi():
            for name in self.phi_fields:
                data.pop(name, None)
            return data
        if any(name in data for name in self.phi_fields) and getattr(instance, "pk", None) is not None:
            reads = self.context.get(_READS)
            if reads is not None:
                reads.append(instance)
            else:
                _audit(self.context, [instance], self.phi_fields)
        return data

    def _may_see_phi(self) -> bool:
        context = self.context
        if "phi" in context:
            return bool(context["phi"])
        request = context.get("request")
        return request is not None and has_scope(request, PHI_READ)


def _audit(context: dict, objects: list, fields) -> None:
    request = context.get("request")
    if not objects or request is None:
        return
    from compliance.phi_reads import audit_phi_reads
    from crm_platform.actor import Actor

    audit_phi_reads(actor=Actor.from_request(request), objects=objects, fields=fields, channel="api")
