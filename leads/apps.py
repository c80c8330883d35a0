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
        grant(SALES, [*view_all, *_perms(["add", "change"], RECORDS), "leads.view_phi"])
        grant(MARKETING, _perms(["view"], ("lead", "leadstatuschange", "scoringrule", "leadassignmentrule")))
        # Coaches see who came in as a lead; deals and pipelines are not theirs to see or edit.
        grant(COACH, [*_perms(["view"], ("lead", "leadstatuschange")), "leads.view_phi"])
        grant(COMPLIANCE_OFFICER, _perms(["view"], RECORDS + HISTORY))

        register_personal_fields(
            "leads.Lead",
            {"assessment": PHI, "persona": PHI, "utm_term": PII, "utm_content": PII},
        )
        register_personal_fields("leads.LeadStatusChange", {"reason": PII})
        register_personal_fields("leads.Deal", {"name": PII, "plan": PHI})

        register_merge_handler(leads_merge_contacts)
        register_defaults(ensure_defaults)
