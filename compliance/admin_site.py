"""The admin app with our admin site (compliance.security.StaffAdminSite: TOTP for staff in
production). Listed in INSTALLED_APPS in place of "django.contrib.admin"; kept apart from
security.py so loading INSTALLED_APPS imports nothing that needs the app registry."""

from django.contrib.admin.apps import AdminConfig


class StaffAdminConfig(AdminConfig):
    default_site = "compliance.security.StaffAdminSite"
