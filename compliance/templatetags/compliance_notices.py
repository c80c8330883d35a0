"""{% admin_notices %}: the open admin notices the current staff user may see."""

from django import template

from compliance.notices import admin_notices_open

register = template.Library()


@register.inclusion_tag("admin/compliance/notices.html", takes_context=True)
def admin_notices(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    return {"notices": admin_notices_open(user=user) if user is not None else []}
