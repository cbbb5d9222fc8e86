from common.api import Envelope, ok
from common.auth import CurrentPrincipal
from common.db.session import SessionDep
from fastapi import APIRouter

from billing.accounts import service
from billing.accounts.schemas import CreditsRead

router = APIRouter(prefix="/api/v1", tags=["credits"])


@router.get("/users/credits", response_model=Envelope[CreditsRead])
async def get_credits(principal: CurrentPrincipal, session: SessionDep):
    """The caller's tenant balance: total, held by pending sends/orders, and available."""
    return ok(await service.credits_for(session, principal.tenant_id))
