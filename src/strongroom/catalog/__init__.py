"""The catalog database (SQLAlchemy 2, Alembic migrations): media, slots,
drives, pools, media contents and events; SQLite in the data folder by
default, PostgreSQL with a `postgresql://` URL. The repository stays the
source of truth for points: everything here can be rebuilt from the
repository and from the media."""

from strongroom.catalog.catalog import Catalog
from strongroom.catalog.jobs import Job, JobState, Schedule, SignInLimit
from strongroom.catalog.machines import Enrollment, Machine
from strongroom.catalog.records import (
    ApiToken,
    AuditEntry,
    ContentEntry,
    Drive,
    Event,
    Library,
    LibraryKind,
    LocationChanges,
    LoginSession,
    Medium,
    MediumKey,
    MediumState,
    Placement,
    Pool,
    Role,
    SessionRecord,
    Severity,
    Sighting,
    User,
)

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Catalog",
    "ContentEntry",
    "Drive",
    "Enrollment",
    "Event",
    "Job",
    "JobState",
    "Library",
    "LibraryKind",
    "LocationChanges",
    "LoginSession",
    "Machine",
    "Medium",
    "MediumKey",
    "MediumState",
    "Placement",
    "Pool",
    "Role",
    "Schedule",
    "SessionRecord",
    "Severity",
    "Sighting",
    "SignInLimit",
    "User",
]
