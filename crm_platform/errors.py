"""Domain errors that services raise and the API layer turns into the JSON error body.

Services also raise Django's ValidationError (400) and PermissionDenied (403)."""


class ConflictError(Exception):
    """The change contradicts stored state (409). `fields` names what conflicts."""

    def __init__(self, message: str, *, fields: dict | None = None, code: str = "conflict"):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.code = code
