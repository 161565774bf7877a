"""Exceptions raised by refinegan.

Every error a user can trigger derives from `RefineganError`, so scripts can catch one type.
Messages name the file / key / value at fault and what was expected.
"""


class RefineganError(Exception):
    """Base class of all refinegan errors."""


class ConfigError(RefineganError, ValueError):
    """A config value is missing, of the wrong type, or out of range."""


class ContractError(RefineganError, ValueError):
    """A stamp file does not follow the HDF5 stamp contract (docs/data_contract.md)."""


class InputDataError(RefineganError, ValueError):
    """User-provided data (FITS, HDF5, catalogs) cannot be used as given."""


class TrainingError(RefineganError, RuntimeError):
    """Training cannot continue (NaN loss, inconsistent inputs, bad checkpoint)."""


class OutputWriteError(RefineganError, OSError):
    """An output file could not be written (full disk, a file size limit, permissions).

    The partial file is removed before this is raised. ``errno``, ``strerror`` and ``filename``
    are those of the failure.
    """
