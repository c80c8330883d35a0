from django.apps import AppConfig

RECORDS = ("lead", "deal")
HISTORY = ("leadstatuschange", "dealstagechange")
CONFIG = ("pipeline", "stage", "stageautomation", "leadassignmentrule", "scoringrule", "clvsettings")


def _perms(actions, models) -> list[str]:
    return [f"leads.{action}_{model}" for model in models for action in actions]


class LeadsConfig(AppConfig):
    """Lead capture, sources and assignment, deals and pipelines, scoring and CLV."""

    name = "leads"

    def ready(self):
        from compliance.registry import PHI, PII, register_personal_fields
        from contacts.services import register_merge_handler
        from crm_platform.admin_tools import register_dashboard_panel
        from crm_platform.api.scopes import set_staff_permission
        from crm_platform.defaults import register_defaults
        from crm_platform.roles import ADMINISTRATOR, COACH, COMPLIANCE_OFFICER, MARKETING, SALES
        from crm_platform.roles import register_role_permissions as grant
        from leads.defaults import ensure_defaults
        from leads.services import leads_merge_contacts

        set_staff_permission("leads:read", "leads.view_lead")
        set_staff_permission("leads:write", "leads.change_lead")
        set_staff_permission("deals:read", "leads.view_deal")
        set_staff_permission("deals:write", "leads.change_deal")

        view_all = _perms(["view"], RECORDS + HISTORY + CONFIG)
        grant(ADMINISTRATOR, [*view_all, *_perms(["add", "change", "delete"], RECORDS + CONFIG)])
        # Sales reads assessments to recommend a plan and sets the plan a won deal starts.
        grant(SALES, [*view_all, *_perms(["add", "change"], RECORDS)])
        grant(MARKETING, _perms(["view"], ("lead", "leadstatuschange", "scoringrule", "leadassignmentrule")))
        # Coaches see who came in as a lead; deals and pipelines are not theirs to see or edit.
        grant(COACH, [*_perms(["view"], ("lead", "leadstatuschange"))])
        grant(COMPLIANCE_OFFICER, _perms(["view"], RECORDS + HISTORY))

        register_personal_fields(
            "leads.Lead",
            {"assessment": PHI, "persona": PHI, "utm_term": PII, "utm_content": PII},
        )
        register_personal_fields("leads.LeadStatusChange", {"reason": PII})
        register_personal_fields("leads.Deal", {"name": PII, "plan": PHI})
        # GDPR erasure: leads (and their status history) go; deals stay for the pipeline figures,
        # anonymised (name and plan blanked, the link to the contact cut).
        from compliance.subjects import register_subject_data

        register_subject_data("leads.LeadStatusChange", contact_path="lead__contact")
        register_subject_data("leads.Lead")
        register_subject_data("leads.Deal", erase="anonymise")

        register_merge_handler(leads_merge_contacts)
        register_defaults(ensure_defaults)
        register_dashboard_panel("Pipeline: deals per stage", _pipeline_panel, permission="leads.view_deal")
        register_dashboard_panel(
            "Funnels: conversion over the last 90 days", _funnels_panel, permission="leads.view_lead"
        )


def _pipeline_panel(request):
    from django.utils.html import format_html

    from crm_platform.charts import bar_chart
    from leads.models import Pipeline
    from leads.selectors import pipeline_stats

    pipeline = Pipeline.objects.filter(is_default=True).first()
    if pipeline is None:
        return bar_chart([])
    stats = pipeline_stats(pipeline=pipeline)
    rate = f"{stats['win_rate']:.0%}" if stats["win_rate"] is not None else "—"
    # One figure per currency: amounts in two currencies do not add up.
    weighted = " · ".join(
        f"{part['weighted_amount']:,.2f} {part['currency']}" for part in stats["totals"]["by_currency"]
    )
    return format_html(
        "{}<p>Weighted open amount: {} · win rate: {}</p>",
        bar_chart([(row["name"], row["count"]) for row in stats["stages"]]),
        weighted or "—",
        rate,
    )


def _funnels_panel(request):
    from django.utils import timezone

    from contacts.lifecycle import FUNNELS
    from crm_platform.charts import bar_chart
    from leads.selectors import funnels

    until = timezone.now()
    since = until - timezone.timedelta(days=90)
    rows = []
    for name in FUNNELS:
        result = funnels(name=name, since=since, until=until)
        rows.append((f"{name} ({result['converted']}/{result['entered']})", round(100 * (result["rate"] or 0), 1)))
    return bar_chart(rows, unit="%")
