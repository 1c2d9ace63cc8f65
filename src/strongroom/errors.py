"""The one error tree of strongroom.

Every error a user can meet is a subclass of `StrongroomError`: it carries a
one-line message for humans, an exit code for scripts (documented in
docs/cli.md), and whether trying again may help (`retryable`). Not-found
errors also subclass `FileNotFoundError` so generic callers can catch them.
"""

from __future__ import annotations


class ExitCode:
    """Process exit codes; they follow restic's numbering where restic has one."""

    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3  # finished, but some source files could not be read
    REPO_NOT_FOUND = 10
    REPO_LOCKED = 11
    WRONG_PASSWORD = 12
    INTERRUPTED = 130


class StrongroomError(Exception):
    """Base of all project errors: `str(err)` is the one-line user message."""

    exit_code: int = ExitCode.FAILED
    retryable: bool = False


class UsageError(StrongroomError):
    """The command line or configuration asks for something impossible."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A configuration file or environment variable is malformed."""


# --- storage -----------------------------------------------------------------


class StorageError(StrongroomError):
    """A backend failed to store or fetch an object."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The named object does not exist in the backend."""


class ObjectExists(StorageError, FileExistsError):
    """An exclusive create found the object already present."""


class InvalidObjectName(StorageError, ValueError):
    """A name does not match the backend's strict naming rules."""


class StorageFull(StorageError):
    """The backend has no space left; nothing partial was left behind."""


class TransientStorageError(StorageError):
    """A failure that may pass (network, throttling); callers may retry."""

    retryable = True


# --- repository --------------------------------------------------------------


class RepositoryError(StrongroomError):
    """The repository is missing, malformed or inconsistent."""


class RepositoryNotFound(RepositoryError, FileNotFoundError):
    exit_code = ExitCode.REPO_NOT_FOUND


class RepositoryExists(RepositoryError):
    """`init` found a repository already there."""


class UnsupportedVersion(RepositoryError):
    """The repository was written by a newer, incompatible format version."""


class WrongPassword(RepositoryError):
    exit_code = ExitCode.WRONG_PASSWORD


class RepositoryLocked(RepositoryError):
    exit_code = ExitCode.REPO_LOCKED
    retryable = True


class IntegrityError(RepositoryError):
    """Data failed authentication or does not match its id: it was damaged."""


class ChunkNotFound(RepositoryError, KeyError):
    """A manifest references a chunk that no index knows."""

    def __str__(self) -> str:  # KeyError would add quotes
        return str(self.args[0]) if self.args else "chunk not found"


class PointNotFound(RepositoryError, FileNotFoundError):
    """No recovery point matches the given id or name."""


class PathNotFound(StrongroomError, FileNotFoundError):
    """A path inside a recovery point does not exist."""


# --- sources -----------------------------------------------------------------


class SourceError(StrongroomError):
    """A source could not be read at all (as opposed to one unreadable file)."""


class Interrupted(StrongroomError):
    exit_code = ExitCode.INTERRUPTED


class MediaError(StrongroomError):
    """A media library, a drive or a cartridge refused or failed."""


class ChangerError(MediaError):
    """The changer refused a move or could not report its status."""


class DriveError(MediaError):
    """A drive failed to read, write or position."""


class NoMedium(DriveError):
    """No cartridge is loaded in the drive."""


class EndOfMedium(DriveError):
    """The cartridge is full: the record was not written."""


class EndOfData(DriveError):
    """Reading went past the last record written on the cartridge."""


class MediaNotFound(MediaError, FileNotFoundError):
    """No medium with that barcode (or media id) is known or present."""


class CatalogError(StrongroomError):
    """The catalog database cannot be opened, migrated or written."""


class MaintenanceLocked(StrongroomError):
    """Another server process holds an exclusive maintenance lock (prune, ...)."""

    exit_code = ExitCode.REPO_LOCKED
    retryable = True


class RemoteError(StrongroomError):
    """An agent's backup server refused a request, or none of its addresses answers."""


class RemoteRefused(RemoteError):
    """The backup server answered with an error status (4xx, or a 5xx not
    worth retrying): `status` is that status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RemoteUnavailable(RemoteError):
    """No address of the backup server answers (yet): trying again may help."""

    retryable = True
