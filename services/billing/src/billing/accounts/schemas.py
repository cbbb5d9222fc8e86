from common.api import CamelModel


class CreditsRead(CamelModel):
    """Amounts are integers in the currency's minor unit (cents)."""

    balance: int
    held: int
    available: int
    currency: str
