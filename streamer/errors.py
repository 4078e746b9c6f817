"""The project's exceptions: one root, a few meaningful kinds."""


class SheetBreakError(Exception):
    """Root of every error this project raises on purpose."""


class DataError(SheetBreakError):
    """Input rows or files cannot be used as they are."""


class BundleError(SheetBreakError):
    """A model bundle or registry is missing, corrupt or incompatible."""


class ConfigError(SheetBreakError):
    """Settings given on the command line or in the environment are wrong."""
