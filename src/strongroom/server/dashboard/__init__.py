"""The web dashboard (docs/server.md, "Dashboard"): pages served by the
backup server under `/`, over the same sessions, roles and audit log as the
API; htmx and the stylesheet are vendored in static/ (see its README)."""

from strongroom.server.dashboard.pages import add_dashboard_routes

__all__ = ["add_dashboard_routes"]
