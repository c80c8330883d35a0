"""Admin plumbing shared by every app's ModelAdmins: changelists that stay fast on a million
rows, and the actor of an admin request."""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import cached_property, reduce

from django.contrib.admin import AllValuesFieldListFilter, ShowFacets
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.core import checks
from django.core.paginator import Paginator
from django.db import connection, models
from django.db.models import Q

# Past this many matches a filtered changelist says "more than N" instead of counting them all.
COUNT_CAP = 10_000


class EstimatedCountPaginator(Paginator):
    """No full-table COUNT(*): an unfiltered changelist uses PostgreSQL's own estimate of the
    table's size (pg_class.reltuples, kept by ANALYZE and autovacuum); a filtered one counts
    at most COUNT_CAP + 1 rows."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        query = getattr(queryset, "query", None)
        if query is None:
            return len(queryset)
        if not query.where and not query.distinct:
            estimate = _estimate(queryset.model._meta.db_table)
            if estimate is not None and estimate > COUNT_CAP:
                return estimate
        return queryset.order_by()[: COUNT_CAP + 1].count()


def _estimate(table: str) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


class ReadOnlyAdminMixin:
    """For rows nobody edits by hand (logs, histories, records the services write): view only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class FastChangeList(ChangeList):
    """A sort the page does not offer (a column left out of `sortable_by`, asked for by an
    edited or old URL) is ignored, so no URL can order a big table by a column no index serves."""

    def get_ordering_field(self, field_name):
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)


class FastChangeListMixin:
    """For ModelAdmins of big tables. No facet counts (one COUNT per filter choice over the
    whole table); a ModelAdmin whose columns are not all index-served in both directions lists
    the ones that are in `sortable_by` (the others show no sort link, and FastChangeList ignores
    a sort asked for by URL)."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    list_per_page = 50

    def get_changelist(self, request, **kwargs):
        return FastChangeList


def distinct_values(model: type[models.Model], field: str, *, limit: int | None = 500) -> list:
    """The distinct non-null values of a column, in order (the first `limit`, or all with None),
    read by a skip scan: one probe of an index that leads with the column per value (a few
    milliseconds for a few hundred values, where SELECT DISTINCT reads the whole table). The
    column needs such an index."""
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.get_field(field).column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE t(v) AS (
                (SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY {column} LIMIT 1)
                UNION ALL
                SELECT (SELECT {column} FROM {table} WHERE {column} > t.v ORDER BY {column} LIMIT 1)
                  FROM t WHERE t.v IS NOT NULL
            )
            SELECT v FROM t WHERE v IS NOT NULL LIMIT %s
            """,  # noqa: S608 - quoted names from the model's own meta
            [limit],  # LIMIT NULL: all
        )
        return [row[0] for row in cursor.fetchall()]


class IndexedValuesFieldListFilter(AllValuesFieldListFilter):
    """Django's "all values" filter (the same choices and links), its choices read by
    distinct_values instead of a SELECT DISTINCT over the whole table. For a column of the
    model itself (not null) that leads an index: ("topic", IndexedValuesFieldListFilter)."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        self.lookup_choices = distinct_values(model, field_path)


class ExactSearchMixin:
    """For ModelAdmins of big tables searched by identifiers that each have an index: every
    search field is exact ("=field", on the model itself) and matched as `column = term`, which
    those indexes answer. Django's own "=" search compares UPPER(column) = UPPER(term), which no
    index serves, so each search read the whole table; where a field has no index of its own,
    one OR'ed column reads the table anyway, and Django's search (case-blind) is the better
    choice. Identifiers stay case-sensitive; `search_normalizers` maps a field to what a term is
    stored as there, or None when the term cannot be one. Integer fields match a term of
    digits only; a term longer than a field's max_length is not looked for in it."""

    search_normalizers: dict[str, Callable[[str], str | None]] = {}

    def search_q(self, field: str, value) -> Q:
        """The match of one field; a ModelAdmin may shape it so that an index serves it."""
        return Q(**{field: value})

    def check(self, **kwargs):
        errors = super().check(**kwargs)
        own = {f.name for f in self.model._meta.concrete_fields}
        for name in self.search_fields:
            if not (name.startswith("=") and name[1:] in own):
                errors.append(
                    checks.Error(
                        f"{type(self).__name__}: search field {name!r} is not an exact field of "
                        f"{self.model._meta.label} (=field).",
                        obj=type(self),
                        id="crm_platform.E001",
                    )
                )
        return errors

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        matches = []
        for name in self.get_search_fields(request):
            field = name.removeprefix("=")
            value = self._search_value(field, term)
            if value is not None:
                matches.append(self.search_q(field, value))
        if not matches:
            return queryset.none(), False
        return queryset.filter(reduce(operator.or_, matches)), False

    def _search_value(self, field: str, term: str):
        if field in self.search_normalizers:
            return self.search_normalizers[field](term)
        model_field = self.model._meta.get_field(field)
        if isinstance(model_field, models.IntegerField):
            return int(term) if term.isascii() and term.isdigit() and int(term) < 2**63 else None
        if model_field.max_length is not None and len(term) > model_field.max_length:
            return None
        return term


class AuditedAdminMixin:
    """For configuration models edited directly in the admin (rules, settings, profiles):
    every save and delete, inlines included, writes an audit row with the changed field names
    in the same transaction. Domain records go through their services instead."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _audit_form(request, obj, form, "update" if change else "create")

    def delete_model(self, request, obj):
        _audit(request, obj, "delete", {})
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            _audit(request, obj, "delete", {})
        super().delete_queryset(request, queryset)

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        for obj, fields in formset.changed_objects:
            _audit(request, obj, "update", {name: True for name in fields})
        for obj in formset.new_objects:
            _audit(request, obj, "create", {})
        for obj in formset.deleted_objects:
            _audit(request, obj, "delete", {})


def _audit_form(request, obj, form, verb: str) -> None:
    from django import forms

    def value(name, data):
        # A password typed into the form (a new staff user's, a reset) is a secret: the audit
        # log, append-only and readable by audit:read, says that it was set, never what it is.
        field = form.fields.get(name)
        if field is not None and isinstance(field.widget, forms.PasswordInput):
            return "(set)" if data.get(name) else None
        return data.get(name)

    changes = {name: (value(name, form.initial), value(name, form.cleaned_data)) for name in form.changed_data}
    _audit(request, obj, verb, changes)


def _audit(request, obj, verb: str, changes: dict) -> None:
    from compliance.services import audit_record
    from crm_platform.actor import Actor

    audit_record(actor=Actor.from_request(request), action=f"admin.{verb}", obj=obj, changes=changes)


# ---------------------------------------------------------------------------- dashboard
# Apps contribute panels (a title, a permission, and a function returning HTML) in ready();
# /admin/dashboard/ shows the panels the user may see.
_panels: list[tuple[str, str | None, object]] = []


def register_dashboard_panel(title: str, render, *, permission: str | None = None) -> None:
    """render(request) -> safe HTML. Panels show in registration order."""
    if all(existing[0] != title for existing in _panels):
        _panels.append((title, permission, render))


def dashboard_view(request):
    from django.contrib import admin
    from django.template.response import TemplateResponse

    panels = [
        {"title": title, "body": render(request)}
        for title, permission, render in _panels
        if permission is None or request.user.has_perm(permission)
    ]
    context = {**admin.site.each_context(request), "title": "Dashboard", "panels": panels}
    return TemplateResponse(request, "admin/dashboard.html", context)


PHI_PERMISSION = "compliance.view_phi"


class PhiAdminMixin:
    """Hide `phi_fields` (form fields, read-only fields and list columns) from staff without
    compliance.view_phi, unless they hold an active break-glass grant for the contact the page
    is about. Works for ModelAdmins and inlines.

    Every page that shows them writes `phi.read` audit rows (one INSERT per page): the change
    page's object, each inline row, each changelist row."""

    phi_fields: tuple[str, ...] = ()

    def _phi_access(self, request, obj=None) -> str | None:
        """How this request may see the PHI of `obj` (the page's object, or an inline's
        parent): "permission", "break_glass", or None (hidden)."""
        from compliance.phi_reads import ACCESS_BREAK_GLASS, ACCESS_PERMISSION

        if request.user.has_perm(PHI_PERMISSION):
            return ACCESS_PERMISSION
        if obj is not None and _break_glass_active(request, obj):
            return ACCESS_BREAK_GLASS
        return None

    def _hides_phi(self, request, obj=None) -> bool:
        return bool(self.phi_fields) and self._phi_access(request, obj) is None

    def _form_hides_phi(self, request, obj=None) -> bool:
        """Whether a form hides the PHI fields: on an object's page, when its values may not be
        seen. A new object's form (obj None) keeps them: it holds nothing to disclose, and staff
        who may add the object write them (a Sales note, as the API lets them), where a form
        without them saved nothing and answered 500."""
        return obj is not None and self._hides_phi(request, obj)

    def _phi_filtered(self, request, obj, names: list[str]) -> list[str]:
        """`names` less the PHI fields when this request may not see them (for a ModelAdmin
        that builds its own field lists rather than asking super())."""
        return [n for n in names if n not in self.phi_fields] if self._form_hides_phi(request, obj) else names

    def get_fields(self, request, obj=None):
        return self._phi_filtered(request, obj, super().get_fields(request, obj))

    def get_readonly_fields(self, request, obj=None):
        return self._phi_filtered(request, obj, super().get_readonly_fields(request, obj))

    def get_sortable_by(self, request):
        # An encrypted column sorts by its ciphertext: a meaningless order, so no sort link.
        from compliance.fields import EncryptedFieldMixin

        encrypted = {f.name for f in self.model._meta.concrete_fields if isinstance(f, EncryptedFieldMixin)}
        return [name for name in super().get_sortable_by(request) if name not in encrypted]

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        return [*exclude, *self.phi_fields] if self._form_hides_phi(request, obj) else exclude or None

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        return [c for c in columns if c not in self.phi_fields] if self._hides_phi(request) else columns

    # ------------------------------------------------------------------ auditing the reads

    def _audit_phi_read(self, request, objects, access: str) -> None:
        from compliance.phi_reads import audit_phi_reads
        from crm_platform.actor import Actor

        audit_phi_reads(
            actor=Actor.from_request(request), objects=objects, fields=self.phi_fields, channel="admin", access=access
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        response = super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)
        access = self._phi_access(request, obj) if obj is not None and self.phi_fields else None
        if access and set(self.phi_fields) & set(flatten_fieldsets(self.get_fieldsets(request, obj))):
            self._audit_phi_read(request, [obj], access)
        return response

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        shown = [c for c in self.get_list_display(request) if c in self.phi_fields]
        context = getattr(response, "context_data", None) or {}
        if shown and "cl" in context:
            changelist = context["cl"]
            # After rendering, when the page's rows are loaded anyway (no second query).
            response.add_post_render_callback(
                lambda _response: self._audit_phi_read(request, list(changelist.result_list), "permission")
            )
        return response

    def get_formset(self, request, obj=None, **kwargs):
        # Inlines: the rows of the formset are what the page shows; obj is the parent object.
        formset = super().get_formset(request, obj, **kwargs)
        access = self._phi_access(request, obj) if self.phi_fields and request.method == "GET" else None
        if not access:
            return formset
        admin = self

        class AuditedFormSet(formset):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                admin._audit_phi_read(request, [form.instance for form in self.initial_forms], access)

        AuditedFormSet.__name__ = formset.__name__
        return AuditedFormSet


def _break_glass_active(request, obj) -> bool:
    """Whether the user holds an active break-glass grant for the contact `obj` is about
    (remembered for the request: a page asks once per inline and field list)."""
    from compliance.breakglass import break_glass_active
    from compliance.services import audit_subject

    contact_id = audit_subject(obj)
    if contact_id is None:
        return False
    cache = request.__dict__.setdefault("_break_glass", {})
    if contact_id not in cache:
        cache[contact_id] = break_glass_active(user=request.user, contact_id=contact_id)
    return cache[contact_id]
