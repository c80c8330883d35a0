from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, Permission
from django.contrib.postgres.forms import SimpleArrayField
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.template.response import TemplateResponse
from django.utils import timezone

from crm_platform import services
from crm_platform.actor import Actor
from crm_platform.admin_tools import AuditedAdminMixin, _audit
from crm_platform.api.scopes import first_few, not_grantable, not_grantable_message, scope_choices
from crm_platform.models import ApiKey, StaffProfile

admin.site.site_header = settings.ADMIN_SITE_HEADER
admin.site.site_title = "crm_platform"
admin.site.index_title = "Back office"


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=scope_choices, widget=forms.CheckboxSelectMultiple, help_text="admin does not include phi:read."
    )
    allowed_ips = SimpleArrayField(
        forms.CharField(max_length=50), required=False, help_text="Comma-separated addresses or CIDR networks."
    )

    class Meta:
        model = ApiKey
        fields = ["name", "description", "scopes", "allowed_ips", "expires_at"]

    def clean(self):
        data = super().clean()
        try:
            services.api_key_validate(scopes=data.get("scopes") or [], allowed_ips=data.get("allowed_ips") or [])
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                if field not in self.errors:
                    self.add_error(field, errors)
        return data


class _GrantableScopesOnly:
    """A non-superuser gives a key only scopes they hold themselves (api.scopes.not_grantable).
    The key's scopes are checked as saved, those it already had too: an editor who may not give
    them does not change (expiry, allowed IPs) a key that holds more than they do; removing
    scopes down to theirs still works."""

    editor = None

    def clean_scopes(self):
        scopes = self.cleaned_data["scopes"]
        refused = not_grantable(self.editor, scopes)
        if refused:
            raise ValidationError(not_grantable_message(refused))
        return scopes


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scope_list", "status", "expires_at", "last_used_at", "created_at"]
    list_filter = [StatusFilter]
    search_fields = ["name", "=prefix"]
    readonly_fields = ["prefix", "status", "created_at", "created_by", "revoked_at", "last_used_at", "rotated_from"]
    list_select_related = ["created_by"]
    # Both need change_apikey: Django offers an action that names no permission to everyone who
    # may see the list (the Compliance officer views keys), and a rotation shows a working key.
    actions = ["revoke_keys", "rotate_key"]

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    def has_delete_permission(self, request, obj=None):
        return False  # keys are revoked, never deleted: the audit trail points at them

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def get_form(self, request, obj=None, **kwargs):
        return _for_editor(super().get_form(request, obj, **kwargs), _GrantableScopesOnly, request.user)

    def save_model(self, request, obj, form, change):
        actor = Actor.from_request(request)
        data = {name: form.cleaned_data[name] for name in ApiKeyForm.Meta.fields}
        if change:
            services.api_key_update(api_key=obj, actor=actor, **data)
        else:
            key, raw = services.api_key_create(actor=actor, created_by=request.user, **data)
            obj.__dict__.update({k: v for k, v in key.__dict__.items() if not k.startswith("_")})
            obj._state.adding = False
            request._api_key_raw = raw

    def response_add(self, request, obj, post_url_continue=None):
        return self._show_once(request, obj, request._api_key_raw)

    def _show_once(self, request, key, raw):
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "key": key,
            "raw_key": raw,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/crm_platform/apikey/created.html", context)

    @admin.action(description="Revoke selected keys (they stop at once)", permissions=["change"])
    def revoke_keys(self, request, queryset):
        actor = Actor.from_request(request)
        for key in queryset:
            services.api_key_revoke(api_key=key, actor=actor)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)

    @admin.action(
        description="Rotate the selected key (the old one keeps working for the overlap period)", permissions=["change"]
    )
    def rotate_key(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one key to rotate.", messages.ERROR)
            return None
        # The successor is shown to whoever rotates: as good as making a key with these scopes.
        refused = not_grantable(request.user, queryset.get().scopes)
        if refused:
            self.message_user(request, not_grantable_message(refused), messages.ERROR)
            return None
        overlap = timezone.timedelta(hours=settings.API_KEY_ROTATION_OVERLAP_HOURS)
        try:
            key, raw = services.api_key_rotate(
                api_key=queryset.get(), actor=Actor.from_request(request), overlap=overlap, created_by=request.user
            )
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return None
        return self._show_once(request, key, raw)


class StaffProfileInline(admin.StackedInline):
    model = StaffProfile
    fk_name = "user"
    can_delete = False
    raw_id_fields = ["manager"]
    verbose_name = verbose_name_plural = "CRM profile (manager, coverage, capacity)"


# Nobody but a superuser grants what they do not hold themselves, nor takes over (password,
# email, roles) an account that holds more than they do: a staff user with change_user (the
# Administrator role) could otherwise put themselves in any group a superuser had filled, or
# set the password of anyone who holds more, and so hold every permission there is.


def _labels(permissions) -> set[str]:
    return {f"{app}.{codename}" for app, codename in permissions.values_list("content_type__app_label", "codename")}


def _lacking(editor, permissions) -> str:
    """The labels of `permissions` (a Permission queryset) that `editor` does not hold, as a
    list to show (the first few); empty when they hold them all."""
    return first_few(sorted(_labels(permissions) - editor.get_all_permissions()))


def _not_yours(editor, account) -> str | None:
    """Why `editor` may not change `account` (None: they may): a superuser's account is for
    superusers; another, for those who hold every permission it does. Its permissions are read
    from its groups and its own, not get_all_permissions(), which says none while it is inactive
    (reactivating it would hand them over)."""
    if editor.is_superuser:
        return None
    if account.is_superuser:
        return "Only a superuser can change a superuser's account."
    missing = _lacking(editor, Permission.objects.filter(Q(group__user=account) | Q(user=account)).distinct())
    if missing:
        return f"Only a superuser can change this account: it holds permissions you do not ({missing})."
    return None


def _for_editor(form, checks, editor):
    """`form` with the clean_* methods of `checks` for a non-superuser `editor`."""
    if editor.is_superuser:
        return form
    return type(form.__name__, (checks, form), {"editor": editor})


class _GrantableGroupsOnly:
    """A group added to an account must hold only permissions the editor holds; the groups it
    already has stay (taking one away is not granting)."""

    editor = None

    def clean_groups(self):
        groups = self.cleaned_data["groups"]
        current = set(self.instance.groups.values_list("pk", flat=True)) if self.instance.pk else set()
        refused = []
        for group in groups:
            missing = "" if group.pk in current else _lacking(self.editor, group.permissions.all())
            if missing:
                refused.append(f"“{group.name}” (you lack {missing})")
        if refused:
            raise ValidationError(
                "You can grant only groups whose permissions you hold yourself; a superuser can grant "
                + "; ".join(refused)
                + "."
            )
        return groups


class _GrantablePermissionsOnly:
    """A permission added to a group must be one the editor holds."""

    editor = None

    def clean_permissions(self):
        permissions = self.cleaned_data["permissions"]
        current = self.instance.permissions.values_list("pk", flat=True) if self.instance.pk else []
        missing = _lacking(self.editor, permissions.exclude(pk__in=list(current)))
        if missing:
            raise ValidationError(f"You can grant only permissions you hold yourself; a superuser can grant {missing}.")
        return permissions


User = get_user_model()
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class StaffUserAdmin(AuditedAdminMixin, UserAdmin):
    inlines = [StaffProfileInline]
    list_select_related = ["staff_profile"]
    list_display = ["username", "email", "first_name", "last_name", "is_staff", "is_active"]

    # Only a superuser makes superusers or hands out single permissions (a non-superuser grants
    # roles, within what they hold: _GrantableGroupsOnly).
    SUPERUSER_ONLY_FIELDS = ("is_superuser", "user_permissions")

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            readonly += [name for name in self.SUPERUSER_ONLY_FIELDS if name not in readonly]
        return readonly

    def get_form(self, request, obj=None, **kwargs):
        return _for_editor(super().get_form(request, obj, **kwargs), _GrantableGroupsOnly, request.user)

    def has_change_permission(self, request, obj=None):
        # The password page asks this too: a refusal there is a 403.
        if obj is not None and _not_yours(request.user, obj):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        # Asked for each account "Delete selected" would delete, too.
        if obj is not None and _not_yours(request.user, obj):
            return False
        return super().has_delete_permission(request, obj)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The page shows such an account read-only to someone who may change users: say why.
        if obj is not None and super().has_change_permission(request, obj):
            reason = _not_yours(request.user, obj)
            if reason:
                self.message_user(request, reason, messages.WARNING)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def user_change_password(self, request, id, form_url=""):
        # Django's password page saves the form itself, past save_model: audited here (that it
        # was set, by whom; never the password).
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            user = self.get_object(request, unquote(id))
            _audit(
                request, user, "password_change", {"password": "(set)" if user.has_usable_password() else "(unusable)"}
            )
        return response


@admin.register(Group)
class StaffGroupAdmin(AuditedAdminMixin, GroupAdmin):
    def get_form(self, request, obj=None, **kwargs):
        return _for_editor(super().get_form(request, obj, **kwargs), _GrantablePermissionsOnly, request.user)
