"""What the dashboard's administration pages need from the catalog: users
changed with the same rules as `/api/v1/users`, the audit log and the
events by page, the media libraries with their media, and the fast
inventory of one library.

Contract: the last enabled administrator cannot be disabled or demoted
(Conflict, nothing changed); pages are bounded (`PAGE` rows, `MAX_PAGES`
pages); the inventory is the fast one of services/inventory.py (the
changer's status, no cartridge moved) under the library's lock, refused at
once when another job holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from strongroom.catalog import AuditEntry, Event, Library, Medium
from strongroom.config import Settings
from strongroom.errors import StrongroomError
from strongroom.services.accounts import Accounts, Role, User
from strongroom.services.inventory import Detailed, Report, inventory_library

T = TypeVar("T")
PAGE = 50
MAX_PAGES = 200


class Conflict(StrongroomError):
    """A change the rules forbid (the last administrator)."""


def _last_administrator(accounts: Accounts, user: User) -> bool:
    return (
        user.role is Role.ADMINISTRATOR
        and not user.disabled
        and accounts.catalog.count_administrators() <= 1
    )


def change_user(
    accounts: Accounts, name: str, *, role: Role | None = None, disabled: bool | None = None
) -> User:
    """Change a user's role or disable/enable it (CatalogError: no such user;
    Conflict: the last enabled administrator)."""
    user = accounts.catalog.get_user(name)
    demoted = role is not None and role is not Role.ADMINISTRATOR
    if (disabled or demoted) and _last_administrator(accounts, user):
        raise Conflict(f"{name} is the last administrator")
    return accounts.catalog.update_user(name, role=role, disabled=disabled)


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    number: int  # from 1
    more: bool  # a next page exists


def _page(rows: list[T], number: int) -> Page[T]:
    start = (number - 1) * PAGE
    return Page(rows[start : start + PAGE], number, len(rows) > start + PAGE)


def page_number(text: str | None) -> int:
    """A page number from a request: 1 to MAX_PAGES (anything else is 1)."""
    if text is None or not text.isdigit() or len(text) > 4:
        return 1
    return min(max(int(text), 1), MAX_PAGES)


def audit_page(accounts: Accounts, number: int) -> Page[AuditEntry]:
    """The audit log newest first, PAGE rows at page `number`."""
    return _page(accounts.catalog.list_audit(limit=number * PAGE + 1), number)


def events_page(accounts: Accounts, number: int) -> Page[Event]:
    return _page(accounts.catalog.list_events(limit=number * PAGE + 1), number)


@dataclass(frozen=True)
class LibraryView:
    library: Library
    media: list[Medium]  # by slot, then barcode


def libraries(accounts: Accounts) -> list[LibraryView]:
    """The catalog's libraries and the media it places in each."""
    catalog = accounts.catalog
    found = []
    for library in catalog.list_libraries():
        media = catalog.list_media(library=library.name)
        media.sort(key=lambda m: (m.slot is None, m.slot or 0, m.barcode or ""))
        found.append(LibraryView(library, media))
    return found


def library_view(accounts: Accounts, name: str) -> LibraryView:
    library = accounts.catalog.get_library(name)
    media = accounts.catalog.list_media(library=name)
    media.sort(key=lambda m: (m.slot is None, m.slot or 0, m.barcode or ""))
    return LibraryView(library, media)


def fast_inventory(accounts: Accounts, settings: Settings, name: str) -> Report:
    """The fast inventory of the catalog's library `name` (CatalogError when
    the catalog has no such library)."""
    accounts.catalog.get_library(name)
    return inventory_library(name, settings, accounts.catalog, detailed=Detailed.NONE)
