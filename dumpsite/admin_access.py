"""The admin sees and does what the API allows: the same visibility filter and the same object checks."""

from __future__ import annotations

from dumpsite.access import can, visible


class AccessControlledAdmin:
    """Mixin for ModelAdmin. ``view_perm`` decides which objects are listed; change / delete are checked on the
    object (global or object permission), like the API's ActionPermission."""

    view_perm: str = ""

    def _perm(self, action: str) -> str:
        opts = self.model._meta
        return f"{opts.app_label}.{action}_{opts.model_name}"

    def visible_queryset(self, request, queryset):
        return visible(request.user, self.view_perm or self._perm("view"), queryset)

    def get_queryset(self, request):
        return self.visible_queryset(request, super().get_queryset(request))

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return request.user.is_active and request.user.is_staff
        return self.visible_queryset(request, self.model.objects.filter(pk=obj.pk)).exists()

    def has_change_permission(self, request, obj=None):
        return can(request.user, self._perm("change"), obj)

    def has_delete_permission(self, request, obj=None):
        return can(request.user, self._perm("delete"), obj)
